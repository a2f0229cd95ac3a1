"""A database outage gives a clear 503 page with Retry-After (plain text for API clients); /healthz tells the truth.

The outage is real, not mocked: the app's database connection is pointed at a port where nothing listens
(PostgreSQL) or at a file that cannot be opened (SQLite), and pointed back afterwards. The end-to-end version, with
Daphne processes behind a TCP proxy that the test cuts, is in tests/test_scaleout_faults.py.
"""
from __future__ import annotations

import contextlib
import copy
import json
import socket

import pytest
from django.db import DatabaseError, connection, connections, transaction
from django.test import Client
from django.urls import reverse

from core.outage import is_database_unavailable


@contextlib.contextmanager
def closed_port():
    """A loopback port that refuses connections: bound (so nobody else takes it) but not listening."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


@contextlib.contextmanager
def database_made_unreachable(django_db_blocker, tmp_path):
    """The default database cannot be reached inside the block; it is restored afterwards."""
    conn = connections["default"]
    saved = copy.deepcopy(conn.settings_dict)
    with closed_port() as port, django_db_blocker.unblock():
        close_connection_and_pool(conn)
        if conn.vendor == "postgresql":
            conn.settings_dict.update(HOST="127.0.0.1", PORT=str(port))
            pool = conn.settings_dict["OPTIONS"].get("pool")
            if pool:
                # The pool waits this long for a connection before giving up; the test need not wait 5 s.
                conn.settings_dict["OPTIONS"]["pool"] = {**pool, "timeout": 0.5}
        else:
            conn.settings_dict["NAME"] = str(tmp_path / "no-such-folder" / "geoweb.sqlite3")
        try:
            yield
        finally:
            close_connection_and_pool(conn)
            conn.settings_dict.clear()
            conn.settings_dict.update(saved)


def close_connection_and_pool(conn):
    # A PostgreSQL connection pool keeps the parameters it was made with; it must go for new ones to apply.
    conn.close()
    if getattr(conn, "pool", None) is not None:
        conn.close_pool()


@pytest.fixture
def unreachable_database(django_db_blocker, tmp_path):
    with database_made_unreachable(django_db_blocker, tmp_path):
        yield


class SessionWritingMiddleware:
    """Stands for any code that changes the session, so that SessionMiddleware saves it after the view."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request.session["last_seen_path"] = request.path
        return self.get_response(request)


def test_page_request_gets_503_page_with_retry_after_while_database_is_away(client, unreachable_database):
    # A logged-in browser: its session must be read from the database to draw the page's navigation.
    client.cookies["sessionid"] = "k" * 32
    response = client.get(reverse("login"))
    assert response.status_code == 503
    assert response["Retry-After"] == "10"
    assert response["Content-Type"].startswith("text/html")
    assert response["Cache-Control"] == "no-store"
    page = response.content.decode()
    assert "GeoWeb is briefly unavailable" in page
    assert "try again in about 10 seconds" in page
    assert "Traceback" not in page


def test_json_api_gets_its_usual_error_object_with_503(client, unreachable_database):
    # The play page shows `error` of a failed API call to the player.
    response = client.post("/api/games/", data="{}", content_type="application/json", HTTP_ACCEPT="application/json")
    assert response.status_code == 503
    assert response["Retry-After"] == "10"
    body = json.loads(response.content)
    assert body["error"].startswith("GeoWeb cannot reach its database just now. Nothing you sent was saved")
    assert body["retry_after"] == 10


def test_command_line_client_gets_plain_text_503(client, unreachable_database):
    client.cookies["sessionid"] = "k" * 32
    response = client.get(reverse("login"), HTTP_ACCEPT="*/*")
    assert response.status_code == 503
    assert response["Content-Type"] == "text/plain; charset=utf-8"
    assert response["Retry-After"] == "10"
    assert response.content.decode().startswith("503 Service Unavailable: GeoWeb cannot reach its database")


def test_retry_after_follows_the_setting(client, settings, unreachable_database):
    settings.OUTAGE_RETRY_AFTER_S = 42
    client.cookies["sessionid"] = "k" * 32
    response = client.get(reverse("login"))
    assert response.status_code == 503
    assert response["Retry-After"] == "42"


def test_outage_noticed_after_the_view_still_gives_503(settings, unreachable_database):
    # The view renders fine (no session cookie, so no database read); the failure comes when the session is saved.
    settings.MIDDLEWARE = [*settings.MIDDLEWARE, "tests.test_outage.SessionWritingMiddleware"]
    # As a real server does: the exception becomes a response instead of being re-raised into the test.
    client = Client(raise_request_exception=False)
    response = client.get(reverse("login"))
    assert response.status_code == 503
    assert response["Retry-After"] == "10"
    assert "GeoWeb is briefly unavailable" in response.content.decode()


def test_requests_succeed_again_once_the_database_is_back(client, transactional_db, django_db_blocker, tmp_path,
                                                          user):
    # transactional_db: what the test wrote is committed, so it survives the connection being dropped.
    client.force_login(user)
    with database_made_unreachable(django_db_blocker, tmp_path):
        assert client.get(reverse("login")).status_code == 503
    response = client.get(reverse("login"))
    assert response.status_code == 200
    assert user.username in response.content.decode()


@pytest.mark.django_db
def test_a_broken_query_is_still_a_500_not_an_outage():
    with pytest.raises(DatabaseError) as caught, transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT * FROM table_that_does_not_exist")
    assert not is_database_unavailable(caught.value)


@pytest.mark.django_db
def test_healthz_reports_database_and_channel_layer(client, settings):
    response = client.get("/healthz")
    assert response.status_code == 200
    body = json.loads(response.content)
    assert body["status"] == "ok"
    assert body["database"]["ok"] is True
    assert body["database"]["vendor"] == connection.vendor
    assert body["channel_layer"]["ok"] is True
    assert body["channel_layer"]["backend"] == settings.CHANNEL_LAYERS["default"]["BACKEND"].rsplit(".", 1)[1]
    assert response["Cache-Control"].startswith("max-age=0")


def test_healthz_is_503_while_the_database_is_away(client, unreachable_database):
    response = client.get("/healthz")
    assert response.status_code == 503
    body = json.loads(response.content)
    assert body["status"] == "unavailable"
    assert body["database"]["ok"] is False
    assert "OperationalError" in body["database"]["error"]
    assert body["channel_layer"]["ok"] is True


@pytest.mark.django_db
def test_healthz_is_503_when_the_channel_layer_cannot_be_reached(client, settings):
    with closed_port() as port:
        settings.CHANNEL_LAYERS = {"default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [f"redis://127.0.0.1:{port}/0"]},
        }}
        settings.HEALTHZ_TIMEOUT_S = 2
        response = client.get("/healthz")
    assert response.status_code == 503
    body = json.loads(response.content)
    assert body["database"]["ok"] is True
    assert body["channel_layer"]["ok"] is False
    assert body["channel_layer"]["backend"] == "RedisChannelLayer"

"""The ASGI HTTP path (geoweb/http_handler.py): whole requests on a fixed thread pool, connections kept between them."""
from __future__ import annotations

import asyncio
import json

import pytest
from channels.testing import HttpCommunicator
from django.db.backends.signals import connection_created

from geoweb.asgi import application
from geoweb.http_handler import PooledSyncASGIHandler

pytestmark = [pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _no_embedded_worker(settings):
    settings.EMBEDDED_WORKER = False  # the first request would start this process's inference worker


def _cookies(response) -> dict[str, str]:
    jar = {}
    for name, value in response["headers"]:
        if name.lower() == b"set-cookie":
            pair = value.decode().split(";", 1)[0]
            key, _, val = pair.partition("=")
            jar[key] = val
    return jar


async def _request(app, method, path, *, body=b"", cookies=None, headers=()):
    headers = [(b"host", b"127.0.0.1"), *headers]
    if cookies:
        headers.append((b"cookie", "; ".join(f"{k}={v}" for k, v in cookies.items()).encode()))
    communicator = HttpCommunicator(app, method, path, body=body, headers=headers)
    response = await communicator.get_response(timeout=10)
    await communicator.wait(timeout=10)  # the request's end (request_finished closes its connections) runs too
    return response


async def test_a_player_starts_a_game_through_the_asgi_app_with_session_and_csrf():
    page = await _request(application, "GET", "/accounts/login/")  # a page with a form sets the CSRF cookie
    assert page["status"] == 200 and b"<form" in page["body"]
    cookies = _cookies(page)
    assert "csrftoken" in cookies
    refused = await _request(application, "POST", "/api/games/", body=b"{}", cookies=cookies,
                             headers=[(b"content-type", b"application/json")])
    assert refused["status"] == 403  # no CSRF header: the middleware chain ran
    answered = await _request(application, "POST", "/api/games/", body=b"{}", cookies=cookies,
                              headers=[(b"content-type", b"application/json"),
                                       (b"x-csrftoken", cookies["csrftoken"].encode())])
    # No playable images in this database: the game service answers, in JSON, why it cannot start a game.
    assert answered["status"] == 503 and "import_im2gps" in json.loads(answered["body"])["error"]


async def test_the_async_health_view_is_served():
    response = await _request(application, "GET", "/healthz")
    body = json.loads(response["body"])
    # The test scope names no client address: an anonymous caller from elsewhere gets the verdict only.
    assert response["status"] == 200 and body == {"status": "ok"}


async def test_consecutive_requests_reuse_one_database_connection(settings):
    # Reconnecting to SQLite on every request cost a game guess about 6 ms of 16 (benchmarks/RESULTS.md).
    if settings.DATABASES["default"]["ENGINE"] != "django.db.backends.sqlite3":
        pytest.skip("PostgreSQL: connections are reused through the pool, not kept by threads")
    assert settings.DATABASES["default"]["CONN_MAX_AGE"] > 0
    opened = []

    def count(sender, connection, **kwargs):
        opened.append(connection.alias)

    connection_created.connect(count)
    try:
        for _ in range(5):
            assert (await _request(application, "GET", "/"))["status"] == 200
    finally:
        connection_created.disconnect(count)
    assert len(opened) <= 1  # none where an earlier test's request left this thread connected


async def test_more_concurrent_requests_than_threads_are_all_answered(settings):
    settings.HTTP_THREADS = 2
    app = PooledSyncASGIHandler()
    responses = await asyncio.gather(*(_request(app, "GET", "/") for _ in range(12)))
    assert [r["status"] for r in responses] == [200] * 12
    assert app._threads()._max_workers == 2


# The Django release geoweb/http_handler.py was last audited against. It reuses BaseHandler.load_middleware,
# ASGIHandler.handle / get_response_async and close_old_connections; a new release may change any of them.
AUDITED_DJANGO = (5, 2)


@pytest.mark.django_db(transaction=False)
def test_the_handler_was_audited_for_this_django_release():
    import django

    assert django.VERSION[:2] == AUDITED_DJANGO, (
        f"Django {django.get_version()} is not the release geoweb/http_handler.py was audited for "
        f"({'.'.join(map(str, AUDITED_DJANGO))}). Before moving AUDITED_DJANGO, re-check against the new "
        "django/core/handlers/asgi.py and base.py: (1) ASGIHandler.__init__ still only builds the middleware chain "
        "(PooledSyncASGIHandler skips it and calls load_middleware(is_async=False)); (2) ASGIHandler.handle still "
        "awaits get_response_async(request) for every request; (3) request_started / request_finished still do only "
        "connection housekeeping (close_old_connections) that _respond repeats on its own thread; (4) async views "
        "are still told apart by the resolver match's func. Then re-run benchmarks/bench_game_api.py --open-loop "
        "with --handler pooled and --handler stock; if the stock handler is within 10 %, delete the pooled one.")

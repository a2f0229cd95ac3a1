"""The app skeleton: settings defaults, accounts, the offline basemap, and the browser harness."""
import json

import pytest
from django.conf import settings
from django.urls import reverse

from tests.conftest import browser_login


def test_embedded_defaults_are_sqlite_inmemory_layer_and_no_debug():
    assert settings.DATABASES["default"]["ENGINE"].endswith(("sqlite3", "postgresql"))
    if not settings.REDIS_URL:
        assert settings.CHANNEL_LAYERS["default"]["BACKEND"] == "channels.layers.InMemoryChannelLayer"
        assert settings.DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3"
    assert settings.DEBUG is False


def test_basemap_serves_natural_earth_countries(client):
    response = client.get(reverse("basemap"))
    assert response.status_code == 200
    data = json.loads(b"".join(response.streaming_content) if response.streaming else response.content)
    names = {feature["properties"]["name"] for feature in data["features"]}
    assert {"France", "Japan", "Brazil", "Australia"} <= names
    assert len(data["features"]) > 200


@pytest.mark.django_db
def test_signup_logs_the_new_user_in(client, django_user_model):
    response = client.post(reverse("signup"), {
        "username": "carol", "password1": "correct-horse-battery-9", "password2": "correct-horse-battery-9"})
    assert response.status_code == 302
    assert django_user_model.objects.filter(username="carol").exists()
    assert "_auth_user_id" in client.session


@pytest.mark.django_db
def test_signup_rejects_mismatched_passwords(client, django_user_model):
    response = client.post(reverse("signup"), {
        "username": "dave", "password1": "correct-horse-battery-9", "password2": "other-horse-battery-9"})
    assert response.status_code == 200
    assert not django_user_model.objects.filter(username="dave").exists()


@pytest.mark.browser
def test_browser_login_and_logout(live_app, page, transactional_db, django_user_model):
    django_user_model.objects.create_user(username="erin", password="a-long-test-password-3")
    browser_login(page, live_app.url, "erin", "a-long-test-password-3")
    page.wait_for_selector("text=erin")
    page.click("text=Log out")
    page.wait_for_selector("text=Log in")
    assert page.js_errors == []


@pytest.mark.django_db
def test_sqlite_runs_with_write_ahead_log():
    from django.db import connection

    if connection.vendor != "sqlite":
        pytest.skip("the PostgreSQL pass")
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA journal_mode")
        assert cursor.fetchone()[0] == "wal"

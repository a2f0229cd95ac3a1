"""Quotas, rate limits, websocket limits, the kill switch (setting and admin toggle), the audit log and the abuse
report link."""
from __future__ import annotations

import hashlib
import json

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from predictor import inference, registry, services, worker
from predictor.consumers import CLOSE_TOO_MANY, MAX_CLIENT_MESSAGES
from predictor.models import Analysis, SiteSettings, UploadAudit
from tests.conftest import make_jpeg
from tests.streaming import open_socket


@pytest.fixture
def tiny_model(tiny_bundle, settings):
    settings.EMBEDDED_WORKER = False
    worker.stop_embedded_worker()
    registry.install_bundle(tiny_bundle)
    yield
    inference.reset_engine()


@pytest.fixture(autouse=True)
def no_embedded_worker(settings):
    settings.EMBEDDED_WORKER = False  # the tests run the worker themselves, when they need one
    worker.stop_embedded_worker()


def post_photo(client, **extra):
    return client.post(reverse("analyze"), {"photo": SimpleUploadedFile("p.jpg", make_jpeg())}, **extra)


@pytest.mark.django_db
def test_daily_quota_answers_429_and_deleting_does_not_reset_it(client, user, settings):
    settings.UPLOAD_DAILY_QUOTA = 2
    client.force_login(user)
    assert [post_photo(client).status_code for _ in range(2)] == [302, 302]
    client.post(reverse("analyses-delete-all"))
    over = post_photo(client, HTTP_ACCEPT="application/json")
    assert over.status_code == 429 and "daily limit" in over.json()["error"]
    assert not Analysis.objects.exists()


@pytest.mark.django_db
def test_upload_rate_limit_per_ip_answers_429_with_retry_after(client, user, settings):
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "upload": (2, 3600)}
    client.force_login(user)
    codes = [post_photo(client).status_code for _ in range(3)]
    assert codes == [302, 302, 429]
    over = post_photo(client)
    assert over.status_code == 429 and int(over["Retry-After"]) > 0 and "Too many upload" in over.content.decode()
    assert Analysis.objects.count() == 2


@pytest.mark.django_db(transaction=True)
async def test_websocket_connects_are_rate_limited_per_ip(user, settings):
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "websocket": (2, 60)}
    analysis = await database_sync_to_async(services.create_analysis)(owner=user, data=make_jpeg())
    for _ in range(2):
        socket = await open_socket(analysis.pk, user)
        assert (await socket.receive_json_from(timeout=5))["type"] == "status"
        await socket.disconnect()
    socket = await open_socket(analysis.pk, user)
    message = await socket.receive_json_from(timeout=5)
    assert message["type"] == "error" and "Too many connections" in message["message"]
    assert (await socket.receive_output(timeout=5)) == {"type": "websocket.close", "code": CLOSE_TOO_MANY}


@pytest.mark.django_db(transaction=True)
async def test_a_client_sending_too_fast_is_disconnected(user):
    analysis = await database_sync_to_async(services.create_analysis)(owner=user, data=make_jpeg())
    socket = await open_socket(analysis.pk, user)
    await socket.receive_json_from(timeout=5)  # status
    for _ in range(MAX_CLIENT_MESSAGES):
        await socket.send_to(text_data=json.dumps({"type": "ping"}))
        assert (await socket.receive_json_from(timeout=5)) == {"type": "pong"}
    await socket.send_to(text_data=json.dumps({"type": "ping"}))
    message = await socket.receive_json_from(timeout=5)
    assert message["type"] == "error" and "Too many messages" in message["message"]
    assert (await socket.receive_output(timeout=5)) == {"type": "websocket.close", "code": CLOSE_TOO_MANY}


@pytest.mark.django_db(transaction=True)
async def test_websocket_from_another_origin_is_refused(user):
    from geoweb.asgi import application

    analysis = await database_sync_to_async(services.create_analysis)(owner=user, data=make_jpeg())
    socket = WebsocketCommunicator(application, f"/ws/analysis/{analysis.pk}/",
                                   headers=[(b"origin", b"https://evil.example"), (b"host", b"localhost")])
    connected, _ = await socket.connect(timeout=5)
    assert connected is False


@pytest.mark.django_db
def test_kill_switch_setting_and_admin_toggle_each_pause_uploads(client, user, admin_client, settings):
    client.force_login(user)
    settings.UPLOADS_ENABLED = False
    page = client.get(reverse("analyze")).content.decode()
    assert 'id="uploads-paused"' in page and 'id="upload-form"' not in page
    assert post_photo(client).status_code == 503
    settings.UPLOADS_ENABLED = True
    assert 'id="upload-form"' in client.get(reverse("analyze")).content.decode()
    # Staff flip the toggle in the admin: the singleton row, OR'ed with the setting.
    change = reverse("admin:predictor_sitesettings_change", args=[SiteSettings.load().pk])
    assert admin_client.get(change).status_code == 200
    saved = admin_client.post(change, {"uploads_paused": "on"})
    assert saved.status_code == 302 and SiteSettings.load().uploads_paused
    paused = post_photo(client, HTTP_ACCEPT="application/json")
    assert paused.status_code == 503 and "paused" in paused.json()["error"]
    assert "paused" in client.get(reverse("analyze")).content.decode()
    assert not Analysis.objects.exists()
    admin_client.post(change, {})
    assert post_photo(client).status_code == 302
    assert SiteSettings.objects.count() == 1


@pytest.mark.django_db
def test_every_upload_is_audited_and_staff_see_the_log(client, user, admin_client, tiny_model):
    client.force_login(user)
    data = make_jpeg(180, 120)
    client.post(reverse("analyze"), {"photo": SimpleUploadedFile("p.jpg", data)})
    worker.Worker(worker_id="w").run_once()
    audit = UploadAudit.objects.get()
    analysis = Analysis.objects.get()
    assert audit.user == user and audit.username == "alice" and audit.analysis_id == analysis.pk
    assert audit.image_sha256 == hashlib.sha256(data).hexdigest() and audit.client_ip == "127.0.0.1"
    assert audit.model_name == "tiny-untrained" and audit.granularity == analysis.granularity != ""
    listing = admin_client.get(reverse("admin:predictor_uploadaudit_changelist"))
    assert listing.status_code == 200 and audit.image_sha256 in listing.content.decode()
    client.force_login(user)  # not staff: the admin sends them to its login page
    assert client.get(reverse("admin:predictor_uploadaudit_changelist")).status_code == 302


@pytest.mark.django_db
def test_analysis_page_has_an_abuse_report_link(client, user, settings):
    settings.ABUSE_REPORT_EMAIL = "abuse@geoweb.example"
    analysis = services.create_analysis(owner=user, data=make_jpeg())
    client.force_login(user)
    page = client.get(reverse("analysis", args=[analysis.pk])).content.decode()
    assert f'href="mailto:abuse@geoweb.example?subject=GeoWeb%20abuse%20report%20(analysis%20{analysis.pk})"' in page

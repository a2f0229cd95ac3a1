"""Admin actions on game images: publish (with a reason for closed licences), withdraw, recompute the active model's
guesses in a background job, check source links, delete with files; each one logged in the admin history."""
from __future__ import annotations

import http.server
import threading

import pytest
from django.contrib.admin.models import DELETION, LogEntry
from django.core.files.storage import default_storage
from django.urls import reverse

from games import selectors, services
from games.models import GameImage, ModelGuess, RecomputeJob
from predictor import inference, registry, worker
from tests.game_factories import MODEL, make_image, make_playable

CHANGELIST = reverse("admin:games_gameimage_changelist")


def run_action(client, action: str, images, **extra):
    data = {"action": action, "_selected_action": [image.pk for image in images], **extra}
    return client.post(CHANGELIST, data)


def history(image) -> list[str]:
    return [entry.get_change_message() for entry in
            LogEntry.objects.filter(object_id=str(image.pk), content_type__model="gameimage").order_by("id")]


# --- activation -----------------------------------------------------------------------------------------------------

@pytest.mark.django_db
def test_open_licences_are_activated_at_once_and_logged(admin_client):
    image = make_image(index=0, lat=1, lon=1, model_lat=2, model_lon=2)
    GameImage.objects.filter(pk=image.pk).update(active=False)
    response = run_action(admin_client, "activate", [image])
    assert response.status_code == 302
    image.refresh_from_db()
    assert image.active
    assert history(image) == ["Activated"]
    history_page = admin_client.get(reverse("admin:games_gameimage_history", args=[image.pk])).content.decode()
    assert "Activated" in history_page and "admin" in history_page


@pytest.mark.django_db
def test_a_closed_licence_is_not_activated_without_a_reason(admin_client):
    closed = make_image(index=0, lat=1, lon=1, model_lat=2, model_lon=2, licence="All Rights Reserved")
    GameImage.objects.filter(pk=closed.pk).update(active=False)
    page = run_action(admin_client, "activate", [closed])
    assert page.status_code == 200
    assert "record why they may be shown" in page.content.decode()
    assert closed.source_id in page.content.decode()
    closed.refresh_from_db()
    assert not closed.active
    # Submitting the intermediate form without a reason changes nothing either.
    again = run_action(admin_client, "activate", [closed], apply_reason="1", reason="  ")
    assert again.status_code == 200 and "This field is required" in again.content.decode()
    closed.refresh_from_db()
    assert not closed.active and history(closed) == []
    assert not selectors.playable_images(model_name=MODEL).exists()


@pytest.mark.django_db
def test_a_closed_licence_is_activated_with_a_recorded_reason_and_becomes_playable(admin_client):
    closed = make_image(index=0, lat=1, lon=1, model_lat=2, model_lon=2, licence="All Rights Reserved")
    GameImage.objects.filter(pk=closed.pk).update(active=False)
    response = run_action(admin_client, "activate", [closed], apply_reason="1",
                          reason="Author gave written permission on 2024-05-01")
    assert response.status_code == 302
    closed.refresh_from_db()
    assert closed.active and closed.activation_reason == "Author gave written permission on 2024-05-01"
    assert "reason: Author gave written permission" in history(closed)[0]
    assert list(selectors.playable_images(model_name=MODEL)) == [closed]


@pytest.mark.django_db
def test_editing_an_image_to_active_with_a_closed_licence_needs_a_reason(admin_client):
    image = make_image(index=0, lat=1, lon=1, licence="All Rights Reserved")
    GameImage.objects.filter(pk=image.pk).update(active=False)
    form = {"lat": 1, "lon": 1, "source_id": image.source_id, "author": "x", "licence_name": "All Rights Reserved",
            "licence_url": "", "source_url": "", "active": "on", "activation_reason": "",
            "model_guesses-TOTAL_FORMS": 0, "model_guesses-INITIAL_FORMS": 0}
    response = admin_client.post(reverse("admin:games_gameimage_change", args=[image.pk]), form)
    assert response.status_code == 200 and "say why the image may be shown" in response.content.decode()
    image.refresh_from_db()
    assert not image.active


@pytest.mark.django_db
def test_deactivate_withdraws_images_from_new_games_and_is_logged(admin_client):
    images = make_playable(2)
    run_action(admin_client, "deactivate", images[:1])
    assert list(selectors.playable_images(model_name=MODEL)) == images[1:]
    assert history(images[0]) == ["Deactivated (withdrawn from play)"]
    assert history(images[1]) == []


# --- source links ---------------------------------------------------------------------------------------------------

class _Handler(http.server.BaseHTTPRequestHandler):
    def _answer(self, with_body: bool):
        if self.path == "/alive":
            self.send_response(200)
        elif self.path == "/no-head" and self.command == "HEAD":
            self.send_response(405)
        elif self.path == "/no-head":
            self.send_response(206)
        else:
            self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_HEAD(self):
        self._answer(False)

    def do_GET(self):
        self._answer(True)

    def log_message(self, *args):
        pass


@pytest.fixture
def link_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.django_db
def test_link_check_records_alive_dead_and_the_date(admin_client, link_server):
    alive, gone, no_head, closed = (make_image(index=i, lat=i, lon=i) for i in range(4))
    closed_port = http.server.HTTPServer(("127.0.0.1", 0), _Handler)
    closed_url = f"http://127.0.0.1:{closed_port.server_address[1]}/x"
    closed_port.server_close()  # nothing listens there any more
    for image, url in [(alive, f"{link_server}/alive"), (gone, f"{link_server}/gone"),
                       (no_head, f"{link_server}/no-head"), (closed, closed_url)]:
        GameImage.objects.filter(pk=image.pk).update(source_url=url)
    response = run_action(admin_client, "check_source_links", [alive, gone, no_head, closed])
    assert response.status_code == 302
    for image in (alive, gone, no_head, closed):
        image.refresh_from_db()
        assert image.link_checked_at is not None
    assert (alive.link_status, alive.link_check_detail) == ("alive", "HTTP 200")
    assert (gone.link_status, gone.link_check_detail) == ("dead", "HTTP 404")
    assert (no_head.link_status, no_head.link_check_detail) == ("alive", "HTTP 206")
    assert closed.link_status == "dead" and closed.link_check_detail.startswith("unreachable")
    assert history(gone) == ["Source link checked: dead (HTTP 404)"]
    dead_list = admin_client.get(CHANGELIST, {"link_status__exact": "dead"}).content.decode()
    assert gone.source_id in dead_list and alive.source_id not in dead_list


# --- deletion -------------------------------------------------------------------------------------------------------

@pytest.mark.django_db
def test_delete_removes_the_row_and_its_file_and_is_logged(admin_client, django_capture_on_commit_callbacks):
    image = make_image(index=0, lat=1, lon=1, model_lat=2, model_lon=2)
    name = image.image.name
    assert default_storage.exists(name)
    with django_capture_on_commit_callbacks(execute=True):
        response = run_action(admin_client, "delete_selected", [image], post="yes")
    assert response.status_code == 302
    assert not GameImage.objects.filter(pk=image.pk).exists()
    assert not ModelGuess.objects.exists()
    assert not default_storage.exists(name)
    assert LogEntry.objects.filter(action_flag=DELETION, object_id=str(image.pk)).exists()


@pytest.mark.django_db
def test_played_images_are_not_deleted(admin_client, settings):
    settings.GAME_ROUNDS = 2
    images = make_playable(2)
    services.start_game(session_key="s", seed=1)
    page = run_action(admin_client, "delete_selected", images, post="yes")
    assert page.status_code == 200  # the confirmation page lists the protected rounds instead
    assert "protected" in page.content.decode().lower()
    assert GameImage.objects.count() == 2
    assert all(default_storage.exists(image.image.name) for image in images)


# --- recompute job --------------------------------------------------------------------------------------------------

@pytest.fixture
def tiny_model(tiny_bundle, settings):
    registry.install_bundle(tiny_bundle)
    inference.reset_engine()
    yield registry.active_bundle_name()
    inference.reset_engine()


@pytest.mark.django_db(transaction=True)
def test_recompute_runs_the_active_model_in_the_background_with_progress(admin_client, tiny_model, settings):
    settings.ENGINE_MAX_BATCH = 2  # 3 photos: two batches
    images = make_playable(3)
    broken = make_image(index=5, lat=0, lon=0)
    default_storage.delete(broken.image.name)
    response = run_action(admin_client, "recompute_guesses", images + [broken])
    job = RecomputeJob.objects.get()
    assert response.status_code == 302 and response["Location"] == reverse("admin:games_recomputejob_change",
                                                                           args=[job.pk])
    assert job.status == "queued"  # the web process only queued it: a worker runs it
    worker.Worker(worker_id="w").run_once()
    job.refresh_from_db()
    assert job.status == "done", job.message
    assert (job.done, job.total, job.failed) == (4, 4, 1)
    assert job.errors[0][0] == broken.source_id and "unreadable" in job.errors[0][1]
    guesses = ModelGuess.objects.filter(model_name=tiny_model)
    assert sorted(g.image_id for g in guesses) == sorted(i.pk for i in images)
    for guess in guesses:
        assert -90 <= guess.lat <= 90 and guess.distance_km >= 0
    assert ModelGuess.objects.filter(model_name=MODEL).count() == 3  # the imported guesses are kept
    page = admin_client.get(response["Location"]).content.decode()
    assert '<progress max="4" value="4"' in page and "4 / 4" in page and broken.source_id in page
    assert "Queued recompute job" in history(images[0])[0]


@pytest.mark.django_db
def test_recompute_is_refused_clearly_without_an_active_model(admin_client):
    image = make_image(index=0, lat=1, lon=1)
    response = admin_client.post(CHANGELIST, {"action": "recompute_guesses", "_selected_action": [image.pk]},
                                 follow=True)
    assert "No model is active" in response.content.decode()
    assert not RecomputeJob.objects.exists()


@pytest.mark.django_db
def test_link_check_refuses_more_images_than_a_page_can_wait_for(admin_client, settings, monkeypatch):
    from games import curation

    monkeypatch.setattr(curation, "LINK_CHECK_MAX", 2)
    images = [make_image(index=i, lat=i, lon=i) for i in range(3)]
    response = admin_client.post(CHANGELIST, {"action": "check_source_links",
                                              "_selected_action": [i.pk for i in images]}, follow=True)
    assert "Select at most 2 images per link check" in response.content.decode()
    assert not GameImage.objects.filter(link_checked_at__isnull=False).exists()

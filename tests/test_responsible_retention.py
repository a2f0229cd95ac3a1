"""Retention: the photo is deleted from disk as soon as its analysis ends unless the owner asked to keep it; "delete
all my uploads" and account deletion remove every file and row."""
from __future__ import annotations

import os

import pytest
from django.contrib.auth import get_user_model
from django.db.models.signals import post_delete, pre_delete
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from predictor import inference, registry, services, worker
from predictor.models import Analysis, UploadAudit
from tests.conftest import make_jpeg


@pytest.fixture
def tiny_model(tiny_bundle, settings):
    settings.EMBEDDED_WORKER = False
    worker.stop_embedded_worker()
    registry.install_bundle(tiny_bundle)
    yield
    inference.reset_engine()


def files_on_disk(settings) -> set[str]:
    root = settings.MEDIA_ROOT / "analyses"
    return {os.path.relpath(os.path.join(d, f), settings.MEDIA_ROOT) for d, _, fs in os.walk(root) for f in fs}


def upload(client, *, keep: bool) -> Analysis:
    data = {"photo": SimpleUploadedFile("p.jpg", make_jpeg(200, 150))}
    if keep:
        data["keep_photo"] = "on"
    response = client.post(reverse("analyze"), data)
    assert response.status_code == 302
    return Analysis.objects.order_by("-pk").first()


@pytest.mark.django_db
def test_the_photo_is_deleted_from_disk_when_the_analysis_is_done(client, user, tiny_model, settings):
    client.force_login(user)
    analysis = upload(client, keep=False)
    photo, thumb = analysis.image.name, analysis.thumbnail.name
    assert {photo, thumb} <= files_on_disk(settings)  # stored while it waits for the model
    worker.Worker(worker_id="w").run_once()
    analysis.refresh_from_db()
    assert analysis.status == "done" and not analysis.image and not analysis.thumbnail
    # Only the activation maps (overall and per clicked cell), which hold no pixels of the photo.
    assert files_on_disk(settings) == set(services.analysis_files(analysis))
    assert analysis.cam.name in files_on_disk(settings) and all("/cam/" in f for f in files_on_disk(settings))
    assert client.get(reverse("analysis-photo", args=[analysis.pk])).status_code == 404
    page = client.get(reverse("analysis", args=[analysis.pk])).content.decode()
    assert 'id="photo-deleted"' in page and reverse("analysis-photo", args=[analysis.pk]) not in page
    listing = client.get(reverse("my-analyses")).content.decode()
    assert "photo deleted" in listing and reverse("analysis-thumbnail", args=[analysis.pk]) not in listing


@pytest.mark.django_db
def test_a_kept_photo_stays_until_the_owner_deletes_it(client, user, tiny_model, settings):
    client.force_login(user)
    analysis = upload(client, keep=True)
    worker.Worker(worker_id="w").run_once()
    analysis.refresh_from_db()
    assert analysis.keep_photo and {analysis.image.name, analysis.thumbnail.name} <= files_on_disk(settings)
    assert client.get(reverse("analysis-photo", args=[analysis.pk])).status_code == 200


@pytest.mark.django_db
def test_a_failed_analysis_also_drops_the_photo(client, user, tiny_model, settings, monkeypatch):
    client.force_login(user)
    analysis = upload(client, keep=False)
    monkeypatch.setattr(inference, "get_engine", lambda: (_ for _ in ()).throw(RuntimeError("no GPU")))
    worker.Worker(worker_id="w").run_once()
    analysis.refresh_from_db()
    assert analysis.status == "failed" and files_on_disk(settings) == set()


@pytest.mark.django_db
def test_delete_all_my_uploads_removes_files_and_rows_of_mine_only(client, user, other_user, tiny_model, settings):
    client.force_login(user)
    mine = [upload(client, keep=True) for _ in range(2)]
    theirs = services.create_analysis(owner=other_user, data=make_jpeg(), keep_photo=True)
    worker.Worker(worker_id="w").run_once()
    assert 'id="delete-all"' in client.get(reverse("my-analyses")).content.decode()
    response = client.post(reverse("analyses-delete-all"))
    assert response.status_code == 302
    assert not Analysis.objects.filter(owner=user).exists()
    theirs.refresh_from_db()
    assert files_on_disk(settings) == {f for f in services.analysis_files(theirs)}
    assert UploadAudit.objects.filter(user=user).count() == len(mine)  # the audit log stays


@pytest.mark.django_db
def test_account_deletion_needs_the_password_and_removes_everything(client, user, tiny_model, settings):
    client.force_login(user)
    upload(client, keep=True)
    upload(client, keep=False)  # still queued: its photo is on disk
    worker.Worker(worker_id="w", batch=1).run_once()
    assert files_on_disk(settings)
    wrong = client.post(reverse("account-delete"), {"password": "not-it"})
    assert wrong.status_code == 400 and get_user_model().objects.filter(pk=user.pk).exists()
    assert client.get(reverse("account-delete")).status_code == 200
    gone = client.post(reverse("account-delete"), {"password": "a-long-test-password-1"})
    assert gone.status_code == 302
    assert not get_user_model().objects.filter(pk=user.pk).exists()
    assert not Analysis.objects.exists() and files_on_disk(settings) == set()
    audits = list(UploadAudit.objects.all())
    assert len(audits) == 2 and all(a.user_id is None and a.username == "alice" for a in audits)
    assert client.get(reverse("my-analyses")).status_code == 302  # logged out


@pytest.mark.django_db
def test_deleting_through_the_service_removes_the_files_and_no_signal_does_it(user, settings):
    kept = services.create_analysis(owner=user, data=make_jpeg(), keep_photo=True)
    other = services.create_analysis(owner=user, data=make_jpeg(), keep_photo=True)
    names = services.analysis_files(kept)
    assert set(names) <= files_on_disk(settings) and len(names) == 2
    services.delete_analysis(analysis=kept)
    assert not set(names) & files_on_disk(settings) and not Analysis.objects.filter(pk=kept.pk).exists()
    assert set(services.analysis_files(other)) == files_on_disk(settings)
    # The services delete the files; nothing listens for deleted analyses any more.
    assert not post_delete.has_listeners(Analysis) and not pre_delete.has_listeners(Analysis)


@pytest.mark.django_db
def test_deleting_a_user_in_the_admin_removes_their_files(client, user, other_user, settings):
    services.create_analysis(owner=user, data=make_jpeg(), keep_photo=True)
    theirs = services.create_analysis(owner=other_user, data=make_jpeg(), keep_photo=True)
    admin = get_user_model().objects.create_superuser("root", "root@example.com", "a-long-admin-password-1")
    client.force_login(admin)
    url = reverse("admin:auth_user_delete", args=[user.pk])
    assert client.post(url, {"post": "yes"}).status_code == 302
    assert not get_user_model().objects.filter(pk=user.pk).exists()
    assert files_on_disk(settings) == set(services.analysis_files(theirs))
    # The list's bulk action goes the same way.
    changelist = reverse("admin:auth_user_changelist")
    response = client.post(changelist, {"action": "delete_selected", "_selected_action": [other_user.pk],
                                        "post": "yes"})
    assert response.status_code == 302 and files_on_disk(settings) == set() and not Analysis.objects.exists()

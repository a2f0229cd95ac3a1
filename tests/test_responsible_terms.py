"""Terms of use: uploads are refused, with the terms form shown, until the user ticks the box; acceptance is stored
with its time and version."""
from __future__ import annotations

import os

import pytest
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from django.utils import timezone

from predictor.models import Analysis, TermsAcceptance, UploadAudit
from tests.conftest import make_jpeg


@pytest.fixture
def newcomer(django_user_model):
    return django_user_model.objects.create_user(username="nina", password="a-long-test-password-9")


def stored_files() -> list[str]:
    root = default_storage.location
    return [f for _, _, files in os.walk(root) for f in files] if os.path.isdir(root) else []


@pytest.mark.django_db
def test_terms_page_says_own_photos_and_never_locate_people(client):
    page = client.get("/terms/")
    text = page.content.decode()
    assert page.status_code == 200
    assert "Your own photos only" in text and "Never to locate people" in text
    assert "Log in" in text and 'id="terms-form"' not in text  # anonymous: nothing to accept


@pytest.mark.django_db
def test_upload_is_refused_until_the_terms_are_accepted(client, newcomer):
    client.force_login(newcomer)
    form_page = client.get(reverse("analyze")).content.decode()
    assert 'id="terms-needed"' in form_page and 'id="upload-form"' not in form_page
    refused = client.post(reverse("analyze"), {"photo": SimpleUploadedFile("a.jpg", make_jpeg())})
    assert refused.status_code == 403 and "accept the terms of use" in refused.content.decode()
    as_json = client.post(reverse("analyze"), {"photo": SimpleUploadedFile("a.jpg", make_jpeg())},
                          HTTP_ACCEPT="application/json")
    assert as_json.status_code == 403 and "terms of use" in as_json.json()["error"]
    assert not Analysis.objects.exists() and not UploadAudit.objects.exists() and stored_files() == []


@pytest.mark.django_db
def test_ticking_the_box_stores_acceptance_with_a_timestamp_and_opens_uploads(client, newcomer):
    client.force_login(newcomer)
    unticked = client.post(reverse("terms"), {"next": "/analyze/"})
    assert unticked.status_code == 400 and "tick the box" in unticked.content.decode()
    assert not TermsAcceptance.objects.exists()
    before = timezone.now()
    accepted = client.post(reverse("terms"), {"accept": "yes", "next": "/analyze/"})
    assert accepted.status_code == 302 and accepted["Location"] == "/analyze/"
    record = TermsAcceptance.objects.get(user=newcomer)
    assert before <= record.accepted_at <= timezone.now() and record.version
    assert 'id="upload-form"' in client.get(reverse("analyze")).content.decode()
    assert "You accepted these terms" in client.get("/terms/").content.decode()
    uploaded = client.post(reverse("analyze"), {"photo": SimpleUploadedFile("a.jpg", make_jpeg())})
    assert uploaded.status_code == 302 and Analysis.objects.filter(owner=newcomer).count() == 1


@pytest.mark.django_db
def test_next_cannot_send_the_user_off_site(client, newcomer):
    client.force_login(newcomer)
    response = client.post(reverse("terms"), {"accept": "yes", "next": "//evil.example/"})
    assert response["Location"] == reverse("analyze")


@pytest.mark.django_db
def test_a_new_terms_version_must_be_accepted_again(client, user, settings):
    client.force_login(user)
    settings.TERMS_VERSION = "next-version"
    refused = client.post(reverse("analyze"), {"photo": SimpleUploadedFile("a.jpg", make_jpeg())})
    assert refused.status_code == 403
    client.post(reverse("terms"), {"accept": "yes"})
    assert TermsAcceptance.objects.get(user=user).version == "next-version"
    assert client.post(reverse("analyze"), {"photo": SimpleUploadedFile("a.jpg", make_jpeg())}).status_code == 302

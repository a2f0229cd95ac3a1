"""Sensitive scenes: a photo with a face or an indoor scene is answered at country level only, and the page says
why. The face photo is matplotlib's bundled grace_hopper.jpg (a real photo of a face, shipped in its wheel)."""
from __future__ import annotations

import io
from pathlib import Path

import matplotlib.cbook
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from PIL import Image

from predictor import faces, inference, registry, worker
from predictor.services import streaming
from predictor.models import Analysis, UploadAudit
from tests.conftest import make_jpeg

FACE_PHOTO = Path(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))


@pytest.fixture
def tiny_model(tiny_bundle, settings):
    settings.EMBEDDED_WORKER = False
    worker.stop_embedded_worker()
    registry.install_bundle(tiny_bundle)
    yield
    inference.reset_engine()


@pytest.fixture
def scene_says(monkeypatch):
    """Make the (random-weight) scene classifier's answer a given concept, as a trained one would for the photo."""
    forced = {}
    real = streaming._stream

    def stream(analysis, prediction, **kwargs):
        if "concept" in forced:
            prediction.scene.concept = forced["concept"]
        return real(analysis, prediction, **kwargs)

    monkeypatch.setattr(streaming, "_stream", stream)
    return forced


def analyse(client, data: bytes) -> tuple[Analysis, str]:
    response = client.post(reverse("analyze"), {"photo": SimpleUploadedFile("p.jpg", data)})
    assert response.status_code == 302
    worker.Worker(worker_id="w").run_once()
    analysis = Analysis.objects.get(pk=int(response["Location"].strip("/").split("/")[-1]))
    assert analysis.status == "done"
    return analysis, client.get(response["Location"]).content.decode()


def estimate_of(analysis: Analysis) -> dict:
    return next(e for e in analysis.events if e["type"] == "estimate")


@pytest.mark.django_db
def test_a_photo_with_a_face_is_shown_at_country_level_with_the_reason(client, user, tiny_model, scene_says):
    scene_says["concept"] = "urban"
    client.force_login(user)
    analysis, page = analyse(client, FACE_PHOTO.read_bytes())
    assert analysis.granularity == "country"
    assert analysis.coarsening_reason == "Shown at country level because faces were detected in the photo."
    assert 'id="coarsening-note" hidden' not in page and "faces were detected in the photo" in page
    estimate = estimate_of(analysis)
    assert estimate["granularity"] == "country" and estimate["coarsening_reason"] == analysis.coarsening_reason
    assert next(e for e in analysis.events if e["type"] == "partitions")["partitionings"] == {}
    assert UploadAudit.objects.get(analysis_id=analysis.pk).coarsening_reason == analysis.coarsening_reason


@pytest.mark.django_db
def test_an_indoor_scene_is_shown_at_country_level_with_the_reason(client, user, tiny_model, scene_says):
    scene_says["concept"] = "indoor"
    client.force_login(user)
    analysis, page = analyse(client, make_jpeg(320, 240))
    assert analysis.granularity == "country" and "indoor scene" in analysis.coarsening_reason
    assert "the scene looks like an indoor scene" in page
    assert estimate_of(analysis)["candidates"] and all(c["token"] is None for c in estimate_of(analysis)["candidates"])


@pytest.mark.django_db
def test_an_outdoor_photo_without_faces_keeps_the_configured_level(client, user, tiny_model, scene_says):
    scene_says["concept"] = "natural"
    client.force_login(user)
    analysis, page = analyse(client, make_jpeg(320, 240))
    assert analysis.granularity == "region" and analysis.coarsening_reason == ""
    assert 'id="coarsening-note" hidden' in page


@pytest.mark.django_db
def test_a_failing_face_check_coarsens_rather_than_risk_it(client, user, tiny_model, scene_says, monkeypatch):
    scene_says["concept"] = "natural"

    def broken(photo):
        raise RuntimeError("cascade missing")

    monkeypatch.setattr(faces, "count_faces", broken)
    client.force_login(user)
    analysis, _ = analyse(client, make_jpeg(320, 240))
    assert analysis.granularity == "country" and "face check could not be run" in analysis.coarsening_reason


def test_detector_finds_the_face_and_not_faces_in_generated_scenes():
    assert faces.count_faces(Image.open(FACE_PHOTO)) >= 1
    assert faces.count_faces(Image.open(io.BytesIO(make_jpeg(640, 480)))) == 0


def test_detector_false_positives_on_the_shared_outdoor_photos(shared_data):
    """The 30 street and camera sample photos hold no visible faces (checked by eye); the detector agrees."""
    from PIL import ImageOps

    photos = sorted(shared_data.glob("*/images/*.jpg"))
    assert len(photos) >= 20
    flagged = [p.name for p in photos if faces.count_faces(ImageOps.exif_transpose(Image.open(p)).convert("RGB"))]
    assert flagged == []

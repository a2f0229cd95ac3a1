"""Issue 14, section 3: the analysis page says what it means.

At a limited granularity the estimate is the first shown candidate and its confidence is that candidate's
probability; the activation map's caption names the same place. The first message of a queued analysis already
flags an untrained model. In Chromium: the "Answer limited to ... level" note appears live, the shown layer's radio is
the checked one, empty headings and toggles stay hidden, coordinates carry only their precision, the activation map
never covers the "photo deleted" notice, and a photo gone mid-stream shows the notice, not a broken image. A favicon
is served, and "1 of your analyses" reads right.
"""
from __future__ import annotations

import re
import uuid

import pytest
import torch
from channels.db import database_sync_to_async
from django.test import Client
from django.urls import reverse

from predictor import granularity, inference, policy, registry, services, worker
from predictor.ml.isn import save_model
from predictor.ml.kinds import load_bundle
from predictor.ml.prediction import S3_CONCEPTS
from predictor.models import Analysis
from tests.conftest import browser_login, live_worker_paused, make_jpeg, photo_with_gps
from tests.streaming import open_socket


def bundle_seeing(concept: str, tiny_bundle, folder) -> object:
    """The tiny random bundle with its scene head pushed to one S3 concept, so the level of the answer is known:
    outdoor photos are answered at region level, indoor ones at country level."""
    model = load_bundle(tiny_bundle)
    column = S3_CONCEPTS.index(concept)
    category = int(model.scene.s3_matrix[:, column].argmax())
    with torch.no_grad():
        model.scene.network.heads[0].bias[category] = 50.0
    return save_model(folder / f"tiny-{concept}", model, name=f"tiny-{concept}")


@pytest.fixture
def in_process_model(tiny_bundle, settings):
    settings.EMBEDDED_WORKER = False
    settings.UPLOAD_FACE_DETECTION = False
    settings.UPLOAD_COARSEN_INDOOR = False
    worker.stop_embedded_worker()
    registry.install_bundle(tiny_bundle)
    yield
    inference.reset_engine()


def analysed(user) -> Analysis:
    analysis = services.create_analysis(owner=user, data=make_jpeg(320, 240))
    worker.Worker(worker_id="w").run_once()
    analysis.refresh_from_db()
    assert analysis.status == "done"
    return analysis


def event(analysis, kind):
    return next(e for e in analysis.events if e["type"] == kind)


@pytest.mark.django_db
def test_at_region_level_the_estimate_is_the_first_candidate_and_its_confidence_is_that_cells(in_process_model,
                                                                                             user, settings):
    settings.UPLOAD_GRANULARITY = "region"
    analysis = analysed(user)
    estimate = event(analysis, "estimate")
    top = estimate["candidates"][0]
    assert (estimate["lat"], estimate["lon"]) == (top["lat"], top["lon"]) == granularity.cell_centre(top["token"])
    assert estimate["confidence"] == top["probability"]
    assert estimate["label"] == top["label"] and estimate["confidence_of"] == "probability of this cell"
    assert estimate["decimals"] == 2 and estimate["radius_of"] == "the estimated cell"
    assert top["token"] in event(analysis, "cam")["caption"] and estimate["label"] in event(analysis, "cam")["caption"]
    assert analysis.summary["confidence"] == top["probability"] and analysis.summary["decimals"] == 2


@pytest.mark.django_db
def test_at_country_level_the_estimate_is_the_first_country_with_its_probability(in_process_model, user,
                                                                                 settings):
    settings.UPLOAD_GRANULARITY = "country"
    analysis = analysed(user)
    estimate = event(analysis, "estimate")
    top = estimate["candidates"][0]
    assert (estimate["lat"], estimate["lon"]) == (top["lat"], top["lon"])
    assert estimate["place"]["country"] == top["place"]["country"] and estimate["confidence"] == top["probability"]
    assert estimate["confidence_of"] == "probability of this country" and estimate["decimals"] == 1
    assert event(analysis, "cam")["caption"] == f"the most probable area in {estimate['label']}"
    client = Client()
    client.force_login(user)
    listing = client.get(reverse("my-analyses")).content.decode()
    # The listing keeps the precision too: "37.2", not "37.20".
    assert f"{estimate['lat']:.1f}, {estimate['lon']:.1f}" in listing and f"{estimate['lat']:.2f}," not in listing


@pytest.mark.django_db(transaction=True)
async def test_the_first_message_of_a_queued_analysis_flags_the_untrained_model(in_process_model, user):
    analysis = await database_sync_to_async(services.create_analysis)(owner=user, data=make_jpeg())
    socket = await open_socket(analysis.pk, user)
    try:
        status = await socket.receive_json_from(timeout=5)
    finally:
        await socket.disconnect()
    assert status["type"] == "status" and status["status"] == "queued"
    assert status["untrained"] is True and status["model_name"] == "tiny-untrained"


@pytest.mark.django_db
def test_a_favicon_is_served(client):
    page = client.get(reverse("terms")).content.decode()
    assert 'rel="icon"' in page and "favicon.svg" in page
    response = client.get("/favicon.ico", follow=True)
    assert response.status_code == 200 and response.redirect_chain[-1][0].endswith("/static/favicon.ico")
    assert b"".join(response.streaming_content)[:4] == b"\x00\x00\x01\x00"  # an ICO file


@pytest.mark.django_db
@pytest.mark.parametrize("count, phrase", [(0, "This deletes your account. It"),
                                           (1, "and your one analysis, with its photo"),
                                           (2, "and all 2 of your analyses, with their photos")])
def test_the_account_page_counts_analyses_in_words(client, user, settings, count, phrase):
    settings.EMBEDDED_WORKER = False
    for _ in range(count):
        services.create_analysis(owner=user, data=make_jpeg())
    client.force_login(user)
    text = " ".join(client.get(reverse("account-delete")).content.decode().split())
    assert phrase in text and "1 of your analyses" not in text


# --- in Chromium, against the live server and its embedded worker ---------------------------------------------------

def _login(page, live_settings, django_user_model) -> object:
    name = f"p{uuid.uuid4().hex[:8]}"
    user = django_user_model.objects.create_user(username=name, password="a-long-test-password-8")
    policy.accept_terms(user)
    browser_login(page, live_settings.url, name, "a-long-test-password-8")
    page.wait_for_selector(f"text={name}")
    return user


def _upload(page, base: str, data: bytes):
    page.goto(f"{base}/analyze/")
    page.set_input_files("#photo-input", files=[{"name": "p.jpg", "mimeType": "image/jpeg", "buffer": data}])
    page.click("#upload-button")
    page.wait_for_url(f"{base}/analyze/*/")


def _broken_images(page) -> list[str]:
    """Visible images of the photo box that did not load (the browser's broken-image icon)."""
    return page.evaluate("""Array.from(document.querySelectorAll("#photo-stack img")).filter(function (img) {
        return !(img.hidden || img.offsetParent === null || !img.getAttribute('src') || (img.complete && img.naturalWidth > 0));
    }).map(function (img) { return img.id + ' ' + img.getAttribute('src'); })""")


def _overlap(a: dict, b: dict) -> bool:
    return not (a["x"] + a["width"] <= b["x"] or b["x"] + b["width"] <= a["x"]
                or a["y"] + a["height"] <= b["y"] or b["y"] + b["height"] <= a["y"])


@pytest.mark.browser
def test_a_region_level_page_tells_one_story(live_settings, page, transactional_db, django_user_model,
                                             tiny_bundle, tmp_path):
    registry.install_bundle(bundle_seeing("urban", tiny_bundle, tmp_path), replace=True)
    user = _login(page, live_settings, django_user_model)
    base = live_settings.url
    with live_worker_paused(base):
        _upload(page, base, photo_with_gps())
        page.wait_for_selector("#analysis-root[data-stage=queued]")
        assert page.inner_text("#granularity-text") == ""  # nothing known before the answer
        assert page.is_visible("#untrained-banner")  # but the model is, from the first message
    page.wait_for_selector("#analysis-root[data-stage=done]", timeout=60_000)
    analysis = Analysis.objects.get(owner=user)
    assert analysis.granularity == "region", analysis.coarsening_reason
    # Live, without a reload.
    assert page.inner_text("#granularity-text") == "Answer limited to region level."
    assert page.is_checked("#layer-toggles input[value=coarse]")
    assert [t.strip() for t in page.locator("#layer-toggles label:visible").all_inner_texts()] == \
        ["Coarse", "Intensity"]
    estimate = event(analysis, "estimate")
    top = estimate["candidates"][0]
    assert page.inner_text("#estimate-label") == top["label"]
    assert page.inner_text("#estimate-coords") == f"{top['lat']:.2f}, {top['lon']:.2f}"
    assert page.inner_text("#estimate-confidence-of") == "probability of this cell"
    assert top["token"] in page.inner_text("#cam-caption") and top["label"] in page.inner_text("#cam-caption")
    assert page.inner_text("#candidates li:first-child").startswith(top["label"])
    assert _broken_images(page) == []

    page.reload()  # the photo was deleted when the analysis ended
    page.wait_for_selector("#analysis-root[data-stage=done]", timeout=60_000)
    page.wait_for_function("document.getElementById('cam').naturalWidth > 0")
    notice, overlay = page.locator("#photo-deleted").bounding_box(), page.locator("#cam").bounding_box()
    assert notice and overlay and not _overlap(notice, overlay)
    assert "cam-alone" in page.get_attribute("#cam", "class")
    assert "photo was deleted" in page.inner_text("#cam-caption")
    assert _broken_images(page) == [] and page.js_errors == []


@pytest.mark.browser
def test_a_country_level_page_hides_what_it_does_not_have(live_settings, page, transactional_db,
                                                          django_user_model, tiny_bundle, tmp_path):
    registry.install_bundle(bundle_seeing("indoor", tiny_bundle, tmp_path), replace=True)
    user = _login(page, live_settings, django_user_model)
    base = live_settings.url
    _upload(page, base, make_jpeg(400, 300))
    page.wait_for_selector("#analysis-root[data-stage=done]", timeout=60_000)
    analysis = Analysis.objects.get(owner=user)
    assert analysis.granularity == "country"
    assert page.inner_text("#granularity-text") == "Answer limited to country level."
    assert not page.is_visible("#partitions") and not page.is_visible("#layer-toggles")
    coordinates = page.inner_text("#estimate-coords")
    assert re.fullmatch(r"-?\d+\.\d, -?\d+\.\d", coordinates), coordinates
    assert all(re.search(r"\(-?\d+\.\d, -?\d+\.\d\)", li) for li in page.locator("#candidates li").all_inner_texts())
    assert page.inner_text("#estimate-confidence-of") == "probability of this country"
    assert page.inner_text("#cam-caption").startswith("Activation map of the most probable area in ")
    assert page.js_errors == []


@pytest.mark.browser
def test_a_photo_gone_while_the_page_loads_shows_the_notice_not_a_broken_image(live_settings, page,
                                                                               transactional_db, django_user_model):
    from django.utils import timezone

    user = _login(page, live_settings, django_user_model)
    # The page is rendered with the photo, and the photo is gone (the analysis ended) by the time it is fetched:
    # a row whose file no longer exists, held by a worker elsewhere so that nothing here touches it.
    analysis = Analysis.objects.create(owner=user, image="analyses/photo/gone.jpg", original_sha256="0" * 64,
                                       status="running", worker_id="elsewhere", claim_token="t",
                                       heartbeat_at=timezone.now())
    page.goto(f"{live_settings.url}/analyze/{analysis.pk}/")
    page.wait_for_selector("#photo-deleted")
    assert page.locator("#photo").count() == 0 and _broken_images(page) == []
    assert page.js_errors == []

"""Clicking a heat-map cell in Chromium swaps the photo's overlay to that cell's activation map."""
from __future__ import annotations

import pytest
import torch

from predictor import policy, registry
from predictor.ml.isn import save_model
from predictor.ml.kinds import load_bundle
from predictor.ml.prediction import S3_CONCEPTS
from predictor.models import Analysis
from tests.conftest import browser_login, photo_with_gps


@pytest.fixture
def outdoor_bundle(tiny_bundle, tmp_path):
    """The tiny random bundle with its scene head pushed to an urban category: indoor scenes are answered at
    country level only (no cells to click), so this test needs a model that calls the photo outdoor."""
    model = load_bundle(tiny_bundle)
    urban = S3_CONCEPTS.index("urban")
    category = int(model.scene.s3_matrix[:, urban].argmax())
    with torch.no_grad():
        model.scene.network.heads[0].bias[category] = 50.0
    return save_model(tmp_path / "tiny-outdoor", model, name="tiny-outdoor")


@pytest.mark.browser
def test_clicking_a_cell_shows_its_activation_map(live_settings, page, transactional_db, django_user_model,
                                                  outdoor_bundle):
    registry.install_bundle(outdoor_bundle, replace=True)
    vera = django_user_model.objects.create_user(username="vera", password="a-long-test-password-5")
    policy.accept_terms(vera)
    base = live_settings.url
    browser_login(page, base, "vera", "a-long-test-password-5")
    page.wait_for_selector("text=vera")
    page.goto(f"{base}/analyze/")
    page.set_input_files("#photo-input", files=[{"name": "street.jpg", "mimeType": "image/jpeg",
                                                 "buffer": photo_with_gps()}])
    page.click("#upload-button")
    page.wait_for_url(f"{base}/analyze/*/")
    page.wait_for_selector("#analysis-root[data-stage=done]", timeout=60_000)
    analysis = Analysis.objects.get(owner=vera)
    assert analysis.granularity == "region", analysis.coarsening_reason
    [cam] = [e for e in analysis.events if e["type"] == "cam"]
    # A function, not a bare expression: Playwright polls an expression with eval, which the page's CSP (no
    # 'unsafe-eval') refuses as soon as the map is not there at the first check.
    page.wait_for_function("() => document.getElementById('cam').naturalWidth > 0")
    assert page.get_attribute("#cam", "src") == cam["url"]

    token, url = list(cam["cells"]["coarse"].items())[1]  # the second most probable coarse cell
    # The map is zoomed to the estimate, so the cell may lie outside the view (Leaflet does not draw it there): the
    # click a user makes after panning is delivered to the cell's path directly.
    page.dispatch_event(f"path.cell-{token}", "click")
    page.wait_for_selector(f"#cam[src='{url}']")
    served = page.request.get(base + url)  # with the page's session
    assert served.ok and served.headers["content-type"] == "image/png"
    assert token in page.inner_text("#cam-caption") and page.is_visible("#cam")

    shown = {f["properties"]["token"] for f in analysis.events[2]["geojson"]["features"]}
    without = sorted(shown - set(cam["cells"]["coarse"]))
    assert without, "the heat map should show more coarse cells than have maps"
    page.dispatch_event(f"path.cell-{without[0]}", "click")
    page.wait_for_selector(f"#cam-message:has-text('No activation map for coarse cell {without[0]}')")
    assert page.get_attribute("#cam", "src") == cam["url"]  # back to the overall map
    assert page.js_errors == []

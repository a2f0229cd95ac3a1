"""The whole upload flow in Chromium against the live server and its embedded worker with the tiny bundle."""
from __future__ import annotations

import io

import pytest
from PIL import Image

from predictor import policy, registry
from predictor.models import Analysis
from tests.conftest import browser_login, photo_with_gps, wait_for_result




@pytest.mark.browser
def test_upload_stream_reload_and_delete(live_settings, page, transactional_db, django_user_model, tiny_bundle):
    registry.install_bundle(tiny_bundle, replace=True)  # into the live server's MODEL_DIR
    uma = django_user_model.objects.create_user(username="uma", password="a-long-test-password-4")
    policy.accept_terms(uma)
    base = live_settings.url
    browser_login(page, base, "uma", "a-long-test-password-4")
    page.wait_for_selector("text=uma")
    page.click("text=Analyze")
    assert "GPS" in page.inner_text("#privacy-notice")
    page.set_input_files("#photo-input", files=[{"name": "holiday.jpg", "mimeType": "image/jpeg",
                                                 "buffer": photo_with_gps()}])
    page.check("#keep-photo")  # kept, so that deleting it below can be checked
    page.click("#upload-button")
    page.wait_for_url(f"{base}/analyze/*/")
    first = wait_for_result(page)
    limited = Analysis.objects.get()
    # Uploads are limited (docs/responsible-use.md): coarse cells at region level, none at country level, to which
    # the random model's scene answer may send this photo.
    if limited.granularity == "country":
        assert first["cells"] == 0 and first["estimate"] and first["candidates"], limited.coarsening_reason
    else:
        assert first["cells"] > 0 and first["estimate"] and len(first["candidates"]) == 5
    assert page.is_visible("#untrained-banner")
    assert page.locator(".leaflet-marker-icon.shape-triangle").count() == 1
    assert page.locator("path.confidence-circle").count() == 1
    # A function, not a bare expression: Playwright polls an expression with eval, which the page's CSP (no
    # 'unsafe-eval') refuses as soon as the map is not there at the first check.
    page.wait_for_function("() => document.getElementById('cam').naturalWidth > 0")

    page.reload()
    assert wait_for_result(page) == first

    analysis = Analysis.objects.get()
    files = [analysis.image.name, analysis.thumbnail.name, analysis.cam.name]
    assert all((live_settings.media_root / name).exists() for name in files)
    page.click("text=My analyses")
    page.wait_for_selector(f"tr[data-analysis='{analysis.pk}'] img.thumb")
    assert first["estimate"] in page.inner_text(f"tr[data-analysis='{analysis.pk}']")
    page.click(f"tr[data-analysis='{analysis.pk}'] button:has-text('Delete')")
    page.wait_for_selector("#no-analyses")
    assert not Analysis.objects.exists()
    assert not any((live_settings.media_root / name).exists() for name in files)
    assert page.js_errors == []

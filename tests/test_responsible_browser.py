"""The responsible-use flow in Chromium: terms first, then an upload whose photo is gone after the analysis, a
limited answer on the page, and no Content Security Policy violation on the way."""
from __future__ import annotations

import pytest

from predictor import registry
from predictor.models import Analysis
from tests.conftest import browser_login, make_jpeg


@pytest.mark.browser
def test_terms_then_upload_with_a_limited_answer_and_no_csp_violation(live_settings, page, transactional_db,
                                                                      django_user_model, tiny_bundle):
    registry.install_bundle(tiny_bundle, replace=True)
    django_user_model.objects.create_user(username="tess", password="a-long-test-password-5")
    violations: list[str] = []
    page.on("console", lambda message: violations.append(message.text)
            if "Content Security Policy" in message.text else None)
    base = live_settings.url
    browser_login(page, base, "tess", "a-long-test-password-5")
    page.wait_for_selector("text=tess")
    page.goto(f"{base}/analyze/")
    assert page.is_visible("#terms-needed") and page.locator("#upload-form").count() == 0
    page.check("#accept-terms")
    page.click("#accept-button")
    page.wait_for_selector("#upload-form")
    page.set_input_files("#photo-input", files=[{"name": "p.jpg", "mimeType": "image/jpeg",
                                                 "buffer": make_jpeg(400, 300)}])
    page.click("#upload-button")
    page.wait_for_url(f"{base}/analyze/*/")
    page.wait_for_selector("#analysis-root[data-stage=done]", timeout=60_000)
    analysis = Analysis.objects.get()
    assert analysis.granularity in ("region", "country")
    toggles = [t.strip() for t in page.locator("#layer-toggles label:visible").all_inner_texts()]
    assert "Fine" not in toggles and "Middle" not in toggles and "Hierarchy" not in toggles
    if analysis.granularity == "region":
        assert "Coarse" in toggles and page.locator("path.heat-cell").count() > 0
    candidates = page.locator("#candidates li").all_inner_texts()
    assert candidates and page.is_visible("#estimate")
    if analysis.coarsening_reason:  # the random model may call the photo indoor
        assert page.inner_text("#coarsening-note") == analysis.coarsening_reason
    page.reload()
    page.wait_for_selector("#analysis-root[data-stage=done]", timeout=60_000)
    assert page.is_visible("#photo-deleted") and page.is_visible("#abuse-report")
    assert not (live_settings.media_root / "analyses" / "photo").exists() or \
        list((live_settings.media_root / "analyses" / "photo").iterdir()) == []
    assert violations == [] and page.js_errors == []

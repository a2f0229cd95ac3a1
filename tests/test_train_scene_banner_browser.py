"""The analysis page names an untrained scene classifier behind trained geolocation networks (issue 19), in
Chromium against the live server, and still after a reload."""
from __future__ import annotations

import pytest

from predictor import policy, registry
from predictor.ml.isn import save_bundle
from predictor.ml.kinds import load_bundle
from tests.conftest import browser_login, photo_with_gps, wait_for_result


@pytest.mark.browser
def test_analysis_page_warns_about_an_untrained_scene_classifier(live_settings, page, transactional_db,
                                                                 django_user_model, tiny_bundle, tmp_path):
    tiny = load_bundle(tiny_bundle)
    # The tiny networks stand in for trained ones: the page reads only the bundle's flags.
    bundle = save_bundle(tmp_path / "random-scene", name="random-scene", networks=dict(tiny.isn.networks.items()),
                         partitionings=tiny.partitionings, scene_network=tiny.scene.network,
                         scene_mapping=tiny.scene_mapping, untrained=False, scene_untrained=True,
                         model_card={"training_data": "test fixture"})
    registry.install_bundle(bundle, replace=True, activate=True)
    user = django_user_model.objects.create_user(username="sami", password="a-long-test-password-7")
    policy.accept_terms(user)
    base = live_settings.url
    browser_login(page, base, "sami", "a-long-test-password-7")
    page.wait_for_selector("text=sami")
    page.click("text=Analyze")
    page.set_input_files("#photo-input", files=[{"name": "street.jpg", "mimeType": "image/jpeg",
                                                 "buffer": photo_with_gps()}])
    page.click("#upload-button")
    page.wait_for_url(f"{base}/analyze/*/")
    wait_for_result(page)
    assert page.is_visible("#scene-untrained-banner")
    assert "Untrained scene classifier" in page.inner_text("#scene-untrained-banner")
    assert not page.is_visible("#untrained-banner")  # the geolocation networks count as trained
    page.reload()
    wait_for_result(page)
    assert page.is_visible("#scene-untrained-banner")
    assert page.js_errors == []
    registry.install_bundle(tiny_bundle, replace=True, activate=True)  # leave the demo model active

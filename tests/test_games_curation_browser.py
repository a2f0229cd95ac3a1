"""Curation end to end in a real browser: staff import, activate and recompute in the admin; a player then gets the
imported photos in a game and reports one."""
from __future__ import annotations

import io
import re
import zipfile

import pytest

from games.models import GameImage, ImageReport, ModelGuess
from predictor import registry
from tests.conftest import make_jpeg

pytestmark = pytest.mark.browser

IDS = [f"{100 + i}_ab{i}_1_p{i}@N00.jpg" for i in range(5)]
PLACES = [(48.8584, 2.2945), (40.6892, -74.0445), (-33.8568, 151.2153), (35.6586, 139.7454), (-22.9519, -43.2105)]


@pytest.fixture
def import_files(tmp_path):
    meta = tmp_path / "im2gps_small.csv"
    meta.write_text("IMG_ID,AUTHOR,LAT,LON,Prob_indoor,Prob_natural,Prob_urban\n" + "".join(
        f"{img_id},Curated Author {i},{lat},{lon},0.1,0.3,0.6\n"
        for i, (img_id, (lat, lon)) in enumerate(zip(IDS, PLACES))))
    photos = tmp_path / "photos.zip"
    with zipfile.ZipFile(photos, "w") as archive:
        for i, img_id in enumerate(IDS):
            archive.writestr(img_id, make_jpeg(160, 120, colour=(50 * i, 100, 200)))
    return meta, photos


@pytest.fixture
def active_tiny_model(live_settings, tiny_trained_bundle):
    """The tiny bundle, labelled trained (an untrained one is never a game opponent), installed and active in the
    live server's model folder; the previous choice is restored."""
    active_file = live_settings.model_dir / registry.ACTIVE_FILE
    before = active_file.read_text() if active_file.exists() else None
    registry.install_bundle(tiny_trained_bundle, replace=True)
    yield registry.active_bundle_name()
    if before is None:
        active_file.unlink(missing_ok=True)
    else:
        active_file.write_text(before)


def run_action(page, action: str):
    page.check("#action-toggle")
    page.select_option("select[name=action]", action)
    page.click("button[name=index]")


def test_staff_import_activate_recompute_then_a_player_plays_and_reports(
        live_settings, transactional_db, active_tiny_model, import_files, page, browser, django_user_model):
    meta, photos = import_files
    violations = []
    page.on("console", lambda message: violations.append(message.text)
            if "Content Security Policy" in message.text else None)
    django_user_model.objects.create_superuser("curator", "curator@example.org", "a-long-curator-password-1")
    url = live_settings.url

    page.goto(f"{url}/admin/login/")
    page.fill("input[name=username]", "curator")
    page.fill("input[name=password]", "a-long-curator-password-1")
    page.click("input[type=submit]")
    page.goto(f"{url}/admin/games/gameimage/")
    page.click("#import-link")

    # Upload, preview, apply.
    page.set_input_files("input[name=meta]", str(meta))
    page.set_input_files("input[name=images]", str(photos))
    page.click("#preview-import")
    assert page.inner_text("#import-counts").startswith("5 to create, 0 to update, 0 unchanged, 0 refused")
    assert GameImage.objects.count() == 0
    page.click("#apply-import")
    page.wait_for_url(re.compile(r"/admin/games/gameimage/$"))
    assert GameImage.objects.count() == 5
    assert page.locator("img.geoweb-thumb").count() == 5
    page.wait_for_function("() => [...document.querySelectorAll('img.geoweb-thumb')]"
                           ".every(img => img.complete && img.naturalWidth > 0)")

    # The licences are unknown: activation asks for a reason.
    run_action(page, "activate")
    page.wait_for_selector("#needs-reason")
    assert page.locator("#needs-reason li").count() == 5
    page.fill("textarea[name=reason]", "Photographers agreed by e-mail, 2024")
    page.click("input[value='Activate with this reason']")
    page.wait_for_selector("text=5 image(s) activated.")

    # Recompute the active model's guesses: the job page shows the progress until it is done.
    run_action(page, "recompute_guesses")
    page.wait_for_url(re.compile(r"/admin/games/recomputejob/\d+/change/$"))
    page.wait_for_selector(".geoweb-progress-text:has-text('5 / 5')", timeout=90_000)
    page.wait_for_selector(".field-status:has-text('Done')", timeout=30_000)
    assert ModelGuess.objects.filter(model_name=active_tiny_model).count() == 5
    page.goto(f"{url}/admin/games/gameimage/{GameImage.objects.order_by('id').first().pk}/change/")
    assert page.locator(".s3-bar").count() == 3 and page.locator("svg.geoweb-map").count() == 1
    # The curation stylesheet applies (a static file: the CSP refuses inline styles).
    assert page.evaluate("getComputedStyle(document.querySelector('.s3-label')).width") == "44px"
    assert violations == []

    # A player now gets the imported photos in a game against the tiny model.
    player = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    player.set_default_timeout(15_000)
    player.goto(url + "/")
    assert active_tiny_model in player.inner_text("main")
    player.click("#start-game")
    player.wait_for_url(re.compile(r"/play/[0-9a-f-]{36}/$"))
    player.wait_for_function("() => { const img = document.getElementById('photo');"
                             " return img && img.complete && img.naturalWidth > 0; }")
    assert "Curated Author" not in player.inner_text("#attribution")  # the credit waits for the guess
    assert player.locator("#report-box").is_hidden()
    box = player.locator("#map").bounding_box()
    player.mouse.click(box["x"] + box["width"] * 0.4, box["y"] + box["height"] * 0.4)
    player.click("#guess")
    player.wait_for_selector("#your-result")

    # ... and reports it from the reveal.
    player.click("#report-open")
    player.select_option("#report-reason", "wrong_location")
    player.fill("#report-comment", "The marker is in the sea")
    player.click("#report-send")
    player.wait_for_selector("#report-status:has-text('Thanks')")
    report = ImageReport.objects.get()
    assert report.comment == "The marker is in the sea" and report.round.index == 0
    assert report.image.source_id in IDS
    player.context.close()

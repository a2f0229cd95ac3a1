"""/models/ and /results/ in a real browser, against a database with played games in it."""
import pytest
from django.core.management import call_command

from games.models import ModelGuess
from predictor import registry
from tests.game_factories import MODEL
from tests.results_factories import play_games, scened_images

pytestmark = pytest.mark.browser


def _images_loaded(page, selector: str) -> list[dict]:
    return page.eval_on_selector_all(
        selector, "els => els.map(e => ({src: e.getAttribute('src'), ok: e.complete && e.naturalWidth > 0}))")


def _scroll_through(page, selector: str) -> None:
    """Bring each (lazy) image into view and wait until it has loaded."""
    images = page.locator(selector)
    for i in range(images.count()):
        images.nth(i).scroll_into_view_if_needed()
        images.nth(i).evaluate("img => img.complete && img.naturalWidth > 0 ? true : new Promise((ok, fail) => "
                               "{ img.onload = () => ok(true); img.onerror = () => fail(new Error(img.src)); })")


def test_models_page_shows_cards_accuracy_and_curves(live_settings, transactional_db, page, shared_data, settings,
                                                     tiny_bundle):
    images = scened_images(6)
    play_games(2)  # a database with games in it: the cards do not depend on them
    for image in images:
        ModelGuess.objects.create(image=image, model_name="base(M, f*)", lat=image.lat, lon=image.lon + 1,
                                  distance_km=80.0)
    registry.install_bundle(tiny_bundle, replace=True)  # the live server's model folder outlives a test
    # The live server reads ../shared/data/geoestimation by default (settings.PUBLISHED_RESULTS_DIR); the figures
    # are computed by the command (a request would otherwise compute them once, on the first visit).
    call_command("recompute_results", "--only", "models")
    page.set_default_timeout(45_000)  # the dev box is shared: allow for load
    page.goto(live_settings.url + "/")
    page.click("nav >> a[href='/models/']")
    page.wait_for_url("**/models/")
    isn = page.locator("article[data-model='ISNs(M, f*, S3)']")
    for section in ("Model details", "Intended uses", "Out-of-scope uses", "Bias, risks and limitations",
                    "Training data and procedure", "Evaluation"):
        assert isn.locator(f"h3:text-is('{section}')").count() == 1
    assert "must not be used to locate people" in isn.inner_text()
    row = isn.locator("tr[data-dataset='Im2GPS3k']").inner_text()
    assert "10.5" in row and "66.0" in row and "2997" in row
    _scroll_through(page, "article[data-model='ISNs(M, f*, S3)'] img")
    charts = _images_loaded(page, "article[data-model='ISNs(M, f*, S3)'] img")
    assert len(charts) == 2 and all(c["ok"] for c in charts), charts
    untrained = page.locator("article[data-model='tiny-untrained']")
    assert "untrained" in untrained.locator("h2").inner_text()
    assert untrained.locator("img").count() == 0 and untrained.locator("table").count() == 0
    assert not page.js_errors


def test_results_page_shows_people_against_models_and_the_export(live_settings, transactional_db, page):
    scened_images(6)
    play_games(3)
    call_command("recompute_results", "--only", "results")
    page.set_default_timeout(45_000)  # the dev box is shared: allow for load
    page.goto(live_settings.url + "/results/")
    assert page.locator("h1").inner_text() == "People vs models"
    assert "15 rounds on" in page.locator(".summary").inner_text()
    row = page.locator(f"#by-model tr[data-model='{MODEL}']").inner_text()
    assert "222 km" in row  # the model is 2° north of every truth
    assert "%" in page.locator(f"#by-model tr[data-model='{MODEL}'] td.beat").inner_text()
    block = page.locator(f"section.result-block[data-model='{MODEL}']")
    assert block.locator("tr[data-group='urban']").count() == 1
    assert block.locator("tr[data-group='Europe']").count() + block.locator("tr[data-group='Asia']").count() >= 1
    _scroll_through(page, "main img")
    plots = _images_loaded(page, "main img")
    assert len(plots) >= 7 and all(p["ok"] for p in plots), plots
    assert "CC BY 4.0" in page.locator("#export-licence").inner_text()
    with page.expect_download() as download:
        page.click("#export-link")
    text = open(download.value.path(), encoding="utf-8").read()
    assert text.startswith("photo_id,true_lat,true_lon,scene,people_lat,people_lon")
    assert len(text.strip().splitlines()) == 16
    assert not page.js_errors

"""Issue 13 in a real browser: a game on the starter pack shows no credit before the guess and the credit, the
places and the /credits/ page after it; the map loads its outlines once; keyboard focus returns to the map; a
one-AI summary has no empty column; two AIs that answered the same place both stay visible; on a phone the summary
map fits every round."""
from __future__ import annotations

import io
import json
import re

import pytest
from django.core.management import call_command

from games import starter
from games.models import Game, GameImage, ModelGuess
from tests.game_factories import MODEL, make_playable

pytestmark = pytest.mark.browser
SECOND = "base(M, f*)"


def photo_loaded(page):
    page.wait_for_function("() => { const img = document.getElementById('photo');"
                           " return img && img.complete && img.naturalWidth > 0; }")


def click_map_and_guess(page, index):
    box = page.locator("#map").bounding_box()
    page.mouse.click(box["x"] + box["width"] * (0.3 + 0.08 * index), box["y"] + box["height"] * 0.45)
    page.click("#guess")
    page.wait_for_selector("#your-result")


def test_starter_pack_game_credits_after_the_guess_places_and_focus(live_settings, transactional_db, page, settings):
    settings.GAME_IMAGES_DIR = ""
    call_command("import_game_images", stdout=io.StringIO())
    manifest = {entry["id"]: entry for entry in json.loads((starter.PACK_DIR / "manifest.json").read_text())["photos"]}
    basemap_requests = []
    page.on("request", lambda request: "/basemap/" in request.url and basemap_requests.append(request.url))
    url = live_settings.url
    page.goto(url + "/")
    page.click("#start-game")
    page.wait_for_url(re.compile(r"/play/[0-9a-f-]{36}/$"))
    page.wait_for_selector("#map.basemap-ready")
    game = Game.objects.get()
    for index in range(5):
        page.wait_for_selector(f"#round-title:has-text('Photo {index + 1} of 5')")
        photo_loaded(page)
        entry = manifest[game.rounds.get(index=index).image.source_id]
        caption = page.inner_text("#attribution")
        assert "credit is shown after your guess" in caption
        body = page.content()
        for secret in (entry["owner"], entry["photo_page"], entry["id"].split("_")[0]):
            assert secret not in body, secret
        if entry["title"]:
            assert f"“{entry['title']}”" not in body
        if index == 1:
            assert page.evaluate("document.activeElement.id") == "map"  # back on the map after "Next photo"
        click_map_and_guess(page, index)
        credit = page.inner_text("#attribution")
        assert entry["owner"] in credit and entry["licence"]["name"] in credit
        assert page.locator(f"#attribution a[href='{entry['photo_page']}']").count() == 1
        assert page.locator(f"#attribution a[href='{entry['licence']['url']}']").count() == 1
        truth = page.inner_text("#truth-result")
        assert truth.startswith("True location:") and len(truth) > len("True location: ")
        assert re.search(r"[\d,]+ points? · \S", page.inner_text("#your-result"))
        page.click("#next")
    page.wait_for_selector("#summary:not([hidden])")
    # One AI: no second-AI column, and every row has as many cells as the header.
    headers = page.locator("#summary-table thead th")
    assert headers.count() == 7 and "Second AI" not in page.inner_text("#summary-table thead")
    assert all(page.locator(f"#summary-table tbody tr:nth-child({i}) td").count() == 7 for i in range(1, 6))
    assert page.locator("#summary-table .credit").count() == 5
    # The world outlines were fetched once for the page (the map and the country box share the request).
    assert len([u for u in basemap_requests if "detail=world" in u]) == 1
    page.click("#credits-link")
    page.wait_for_url(url + "/credits/")
    assert page.locator("#credits-table tbody tr").count() == 188
    assert page.locator("#credits-table a[href='https://creativecommons.org/licenses/by-sa/2.0/']").count() == 57
    assert page.js_errors == []


def test_phone_summary_fits_every_round_and_coinciding_ai_pins_stay_visible(live_settings, transactional_db,
                                                                           browser):
    images = make_playable(6)
    # Rounds far apart: one photo on each side of the antimeridian, so "every round" spans the whole world.
    GameImage.objects.filter(pk=images[0].pk).update(lat=-41.3, lon=174.8)
    # A second AI that answered exactly where the first did, on every photo, far (30 degrees) from the truth.
    for image in GameImage.objects.all():
        first = ModelGuess.objects.get(image=image, model_name=MODEL)
        first.lat = image.lat + 30 if image.lat < 50 else image.lat - 30
        first.save()
        ModelGuess.objects.create(image=image, model_name=SECOND, lat=first.lat, lon=first.lon,
                                  distance_km=first.distance_km)
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    page = context.new_page()
    page.set_default_timeout(15_000)
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(live_settings.url + "/")
    page.select_option("#opponent", MODEL)
    page.select_option("#opponent2", SECOND)
    page.click("#start-game")
    page.wait_for_url(re.compile(r"/play/"))
    for index in range(5):
        page.wait_for_selector(f"#round-title:has-text('Photo {index + 1} of 5')")
        photo_loaded(page)
        page.locator("#map").tap(position={"x": 60 + 50 * index, "y": 140})
        page.locator("#guess").tap()
        page.wait_for_selector("#model2-result")
        page.wait_for_timeout(400)  # the reveal's fitBounds animation
        page.locator("#map").scroll_into_view_if_needed()
        triangle = page.locator("#map .shape-triangle").bounding_box()
        diamond = page.locator("#map .shape-diamond").bounding_box()
        # Both AIs answered the same place: the two pins are drawn side by side, neither hidden.
        assert abs((triangle["x"] - diamond["x"])) >= 12 and abs(triangle["y"] - diamond["y"]) < 2
        for selector in ("#map .shape-triangle", "#map .shape-diamond"):
            box = page.locator(selector).bounding_box()
            hit = page.evaluate("([x, y]) => { const e = document.elementFromPoint(x, y);"
                                " const m = e && e.closest('.shape-marker');"
                                " return m ? m.className : (e ? e.tagName + '.' + e.className : 'nothing'); }",
                                [box["x"] + box["width"] / 2, box["y"] + box["height"] / 2])
            assert hit and selector.split(".")[-1] in hit, (index, selector, hit)
        page.locator("#next").tap()
    page.wait_for_selector("#summary:not([hidden])")
    page.wait_for_timeout(500)  # the fitBounds animation
    frame = page.locator("#summary-map").bounding_box()
    markers = page.locator("#summary-map .shape-marker")
    assert markers.count() == 5 * 4
    for i in range(markers.count()):
        box = markers.nth(i).bounding_box()
        centre = (box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        assert frame["x"] <= centre[0] <= frame["x"] + frame["width"], i
        assert frame["y"] <= centre[1] <= frame["y"] + frame["height"], i
    assert page.locator("#summary-table thead th").count() == 8  # two AIs: the second AI's column is there
    assert page.evaluate("document.documentElement.scrollWidth") <= 390 or page.locator(".table-scroll").count()
    assert errors == []
    context.close()

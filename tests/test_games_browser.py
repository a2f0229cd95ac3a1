"""Play mode in a real browser: a full game, the reveal, the summary, the leaderboard and a challenge replay."""
import re

import pytest

from games.models import Game, Round
from tests.game_factories import ai_scores_and_errors, make_playable

pytestmark = pytest.mark.browser


def photo_loaded(page):
    page.wait_for_function("() => { const img = document.getElementById('photo');"
                           " return img && img.complete && img.naturalWidth > 0; }")


def play_round(page, index, how):
    page.wait_for_selector(f"#round-title:has-text('Photo {index + 1} of 5')")
    photo_loaded(page)
    caption = page.inner_text("#attribution")
    # Nothing about the photo's source before the guess: the credit comes with the reveal.
    assert "credit is shown after your guess" in caption and "author" not in caption and "CC-BY" not in caption
    if how == "keyboard":
        page.focus("#map")
        for _ in range(3):
            page.keyboard.press("ArrowRight")
        page.keyboard.press("ArrowUp")
        page.keyboard.press("Enter")
    elif how == "country":
        page.wait_for_function("() => document.querySelectorAll('#country-list option').length > 100")
        page.fill("#country", "France")
        page.press("#country", "Enter")
        page.click("#guess")
    else:
        box = page.locator("#map").bounding_box()
        page.mouse.click(box["x"] + box["width"] * (0.3 + 0.1 * index), box["y"] + box["height"] * 0.4)
        page.click("#guess")
    page.wait_for_selector("#your-result")
    assert re.search(r"You: [\d,.]+ (km|mi) · [\d,]+ points?", page.inner_text("#your-result"))
    assert re.search(r"Model: [\d,.]+ (km|mi) · [\d,]+ points?", page.inner_text("#model-result"))
    assert page.locator(".shape-square").count() == 1 and page.locator(".shape-triangle").count() == 1
    attribution = page.inner_text("#attribution")
    assert re.search(r"Photo: “untitled” by author \d · CC-BY 2.0", attribution)
    return attribution


def test_a_visitor_plays_a_full_game_and_a_friend_replays_it(live_settings, transactional_db, page, browser):
    make_playable(8)
    url = live_settings.url
    page.goto(url + "/")
    page.click("#start-game")
    page.wait_for_url(re.compile(r"/play/[0-9a-f-]{36}/$"))
    ways = ["click", "keyboard", "country", "click", "click"]
    attributions = []
    for index, how in enumerate(ways):
        attributions.append(play_round(page, index, how))
        if index == 0:
            page.click("#units")
            assert " mi · " in page.inner_text("#your-result")
        if index == 1:
            assert " mi · " in page.inner_text("#your-result")  # the unit choice is remembered
            page.click("#units")
            assert " km · " in page.inner_text("#your-result")
        page.click("#next")
    game = Game.objects.get()
    rounds = list(Round.objects.filter(game=game).order_by("index"))
    assert all(r.is_guessed for r in rounds) and game.finished_at is not None
    # The country round pinned France's centroid; the keyboard round moved the pin off the map centre.
    assert 44 < rounds[2].guess_lat < 49 and 0 < rounds[2].guess_lon < 5
    page.wait_for_selector("#summary:not([hidden])")
    assert page.inner_text("#summary-score") == f"{sum(r.score for r in rounds):,}"
    (_name, first_scores, first_errors), = ai_scores_and_errors(game)
    better = sum(r.distance_km < km for r, km in zip(rounds, first_errors))
    assert page.inner_text("#summary-better") == f"{better} of 5"
    assert page.locator("#summary-table tbody tr").count() == 5
    assert page.locator("#summary-map .shape-square").count() == 5
    page.fill("#nickname", "Pin Wizard")
    page.click("#nickname-form button")
    page.wait_for_selector("text=Saved as Pin Wizard.")
    challenge_link = page.get_attribute("#challenge-link", "href")
    page.click("#leaderboard-link")
    row = page.locator("table.leaderboard tbody tr", has_text="Pin Wizard")
    assert row.count() == 1 and f"{sum(r.score for r in rounds):,}" in row.inner_text()
    assert page.js_errors == []

    friend = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    friend.goto(challenge_link)
    assert friend.inner_text("#challenger-score") == f"{sum(r.score for r in rounds):,}"
    assert friend.inner_text("#challenger-model-score") == f"{sum(first_scores):,}"
    friend.click("#accept-challenge")
    friend.wait_for_url(re.compile(r"/play/[0-9a-f-]{36}/$"))
    replayed = []
    for index in range(5):
        replayed.append(play_round(friend, index, "click"))
        friend.click("#next")
    assert replayed == attributions
    friend.wait_for_selector("#summary-challenger:has-text('Pin Wizard scored')")
    replay = Game.objects.get(challenge_of=game)
    assert list(replay.rounds.order_by("index").values_list("image_id", flat=True)) == [r.image_id for r in rounds]
    friend.context.close()


def test_play_page_on_a_phone_and_a_missing_photo(live_settings, transactional_db, browser):
    make_playable(6)
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(live_settings.url + "/")
    page.click("#start-game")
    page.wait_for_url(re.compile(r"/play/"))
    photo_loaded(page)
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    map_box = page.locator("#map").bounding_box()
    assert map_box["width"] >= 300 and map_box["height"] >= 250
    page.locator("#map").tap(position={"x": 150, "y": 120})
    guess = page.locator("#guess")
    assert guess.is_enabled()
    guess.scroll_into_view_if_needed()
    assert guess.is_visible()
    guess.tap()
    page.wait_for_selector("#your-result")
    # The second photo's file disappears from the server: the page says so and the round stays playable.
    round2 = Round.objects.select_related("image").get(game=Game.objects.get(), index=1)
    round2.image.image.storage.delete(round2.image.image.name)
    page.locator("#next").tap()
    page.wait_for_selector("#round-title:has-text('Photo 2 of 5')")
    page.wait_for_selector("#photo-error:not([hidden])")
    assert "missing or damaged" in page.inner_text("#photo-error")
    page.locator("#map").tap(position={"x": 100, "y": 100})
    page.locator("#guess").tap()
    page.wait_for_selector("#your-result")
    for index in range(2, 5):
        page.locator("#next").tap()
        page.wait_for_selector(f"#round-title:has-text('Photo {index + 1} of 5')")
        page.locator("#map").tap(position={"x": 120, "y": 140})
        page.locator("#guess").tap()
        page.wait_for_selector("#your-result")
    page.locator("#next").tap()
    page.wait_for_selector("#summary:not([hidden])")
    assert page.locator("#play-area").is_hidden()
    assert page.evaluate("document.documentElement.scrollWidth") <= 390  # the summary fits the phone too
    assert errors == []
    context.close()

"""Games against two and three AIs in a real browser: every AI's pin on the reveal, named, and "you beat both AIs"
("all 3 AIs")."""
import re

import pytest

from games.models import Game, ModelGuess, Round
from tests.game_factories import MODEL, ai_scores_and_errors, make_playable
from tests.test_games_two_opponents import SECOND, add_second_model

pytestmark = pytest.mark.browser


def test_the_reveal_shows_both_ai_pins_and_the_summary_says_you_beat_both(live_settings, transactional_db, page):
    images = make_playable(6)
    add_second_model(images)
    # Both AIs guess near the antipode of every photo: any pin scores more, so the player beats both.
    for image in images:
        for name, shift in ((MODEL, 0.0), (SECOND, 3.0)):
            ModelGuess.objects.filter(image=image, model_name=name).update(
                lat=-image.lat + shift, lon=image.lon - 180 if image.lon > 0 else image.lon + 180)
    page.goto(live_settings.url + "/")
    page.select_option("#opponent", MODEL)
    page.select_option("#opponent2", SECOND)
    page.click("#start-game")
    page.wait_for_url(re.compile(r"/play/[0-9a-f-]{36}/$"))
    game = Game.objects.get()
    assert game.opponents == [MODEL, SECOND]
    for index in range(5):
        page.wait_for_selector(f"#round-title:has-text('Photo {index + 1} of 5')")
        box = page.locator("#map").bounding_box()
        page.mouse.click(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.5)
        page.click("#guess")
        page.wait_for_selector("#model2-result")
        map_pins = page.locator("#map")
        assert map_pins.locator(".shape-triangle").count() == 1  # the first AI's pin
        assert map_pins.locator(".shape-diamond").count() == 1  # the second AI's pin
        assert map_pins.locator(".shape-square").count() == 1 and map_pins.locator(".shape-circle").count() == 1
        assert re.search(rf"{re.escape(MODEL)} · Model: [\d,.]+ (km|mi) · [\d,]+ points",
                         page.inner_text("#model-result"))
        assert re.search(rf"{SECOND} · Model: [\d,.]+ (km|mi) · [\d,]+ points", page.inner_text("#model2-result"))
        assert SECOND in page.inner_text("#running-score") and MODEL in page.inner_text("#running-score")
        page.click("#next")
    page.wait_for_selector("#summary:not([hidden])")
    rounds = list(Round.objects.filter(game=game).order_by("index"))
    (_, first_scores, _), (_, second_scores, _) = ai_scores_and_errors(game)
    assert page.inner_text("#summary-ai-0") == f"{sum(first_scores):,}"
    assert page.inner_text("#summary-ai-1") == f"{sum(second_scores):,}"
    player, first, second = (sum(r.score for r in rounds), sum(first_scores), sum(second_scores))
    assert player > first and player > second
    assert page.inner_text("#summary-verdict") == "You beat both AIs!"
    assert page.locator("#summary-map .shape-diamond").count() == 5
    assert page.js_errors == []


THIRD = "third-ai"


def test_a_game_against_three_ais_shows_three_pins_and_three_columns(live_settings, transactional_db, page):
    images = make_playable(6)
    add_second_model(images)
    add_second_model(images, model_name=THIRD)
    # The second and third AIs answer the same place: both pins stay visible, side by side.
    for image in images:
        ModelGuess.objects.filter(image=image, model_name=MODEL).update(lat=-image.lat, lon=image.lon)
    page.goto(live_settings.url + "/")
    page.select_option("#opponent", MODEL)
    page.select_option("#opponent2", SECOND)
    page.select_option("#opponent3", THIRD)
    assert page.locator("#opponent4").count() == 0  # GAME_MAX_OPPONENTS is 3
    page.click("#start-game")
    page.wait_for_url(re.compile(r"/play/[0-9a-f-]{36}/$"))
    game = Game.objects.get()
    assert game.opponents == [MODEL, SECOND, THIRD]
    assert page.locator(".legend-ai").count() == 3
    for index in range(5):
        page.wait_for_selector(f"#round-title:has-text('Photo {index + 1} of 5')")
        box = page.locator("#map").bounding_box()
        page.mouse.click(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.5)
        page.click("#guess")
        page.wait_for_selector("#model3-result")
        pins = page.locator("#map")
        assert [pins.locator(f".shape-{shape}").count() for shape in ("triangle", "diamond", "star")] == [1, 1, 1]
        assert re.search(rf"{THIRD} · Model: [\d,.]+ (km|mi) · [\d,]+ points", page.inner_text("#model3-result"))
        page.click("#next")
    page.wait_for_selector("#summary:not([hidden])")
    scores = ai_scores_and_errors(game)
    assert [name for name, _, _ in scores] == [MODEL, SECOND, THIRD]
    for position, (_, per_round, _) in enumerate(scores):
        assert page.inner_text(f"#summary-ai-{position}") == f"{sum(per_round):,}"
    header = page.inner_text("#summary-table thead")
    assert f"{SECOND}: error · score" in header and f"{THIRD}: error · score" in header
    assert page.locator("#summary-table tbody tr").first.locator("td").count() == 9  # 5 + one per extra AI + 2
    assert page.locator("#summary-map .shape-star").count() == 5
    assert page.js_errors == []

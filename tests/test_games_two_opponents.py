"""Games against two AI opponents at once: choosing them, playable images, reveal, summary and leaderboards."""
import json

import pytest
from django.urls import reverse

from games import scoring, selectors
from games.models import Game, GameImage, ModelGuess, Round
from predictor.ml.geodesy import great_circle_km
from tests.game_factories import MODEL, make_playable

pytestmark = pytest.mark.django_db

SECOND = "geoclip"
ISN_KM = great_circle_km(0, 0, 2, 0)  # make_playable's model guesses 2 degrees north of each truth
GEOCLIP_KM = great_circle_km(0, 0, 5, 0)  # the second model guesses 5 degrees south


def add_second_model(images, *, model_name: str = SECOND):
    for image in images:
        ModelGuess.objects.create(image=image, model_name=model_name, lat=image.lat - 5.0, lon=image.lon,
                                  distance_km=great_circle_km(image.lat, image.lon, image.lat - 5.0, image.lon))


def post(client, url, data=None):
    return client.post(url, json.dumps(data or {}), content_type="application/json")


def play_all(client, key: str, *, north_deg: float) -> list[dict]:
    """Guess `north_deg` degrees north of the truth on every round; returns the reveals."""
    reveals = []
    for index in range(5):
        if index:
            assert post(client, reverse("game-api-next", args=[key])).status_code == 200
        round_ = Round.objects.select_related("image").get(game__key=key, index=index)
        response = post(client, reverse("game-api-guess", args=[key]),
                        {"round": index, "lat": round_.image.lat + north_deg, "lon": round_.image.lon})
        assert response.status_code == 200, response.content
        reveals.append(response.json()["round"])
    return reveals


def test_a_game_against_two_ais_reveals_both_and_the_player_beats_both(client):
    add_second_model(make_playable(6))
    response = post(client, reverse("game-api-start"), {"opponents": [MODEL, SECOND]})
    assert response.status_code == 201, response.content
    state = response.json()
    assert state["opponents"] == [MODEL, SECOND]
    assert [ai["name"] for ai in state["ai_scores"]] == [MODEL, SECOND]
    reveals = play_all(client, state["key"], north_deg=1.0)
    for reveal in reveals:
        isn, geoclip = reveal["ais"]
        assert (isn["name"], geoclip["name"]) == (MODEL, SECOND)
        assert isn["distance_km"] == pytest.approx(ISN_KM, abs=0.5)
        assert geoclip["distance_km"] == pytest.approx(GEOCLIP_KM, abs=0.5)
        assert isn["score"] == scoring.score(isn["distance_km"]) == 4307
        assert geoclip["score"] == scoring.score(geoclip["distance_km"]) < isn["score"]
        truth = reveal["truth"]
        assert (geoclip["lat"], geoclip["lon"]) == pytest.approx((truth["lat"] - 5.0, truth["lon"]))
        assert isn["player_closer"] and geoclip["player_closer"] and reveal["better_than_all_ais"]
    summary = client.get(reverse("game-api-summary", args=[state["key"]])).json()
    totals = {ai["name"]: ai["score"] for ai in summary["ai_scores"]}
    assert totals == {MODEL: 5 * 4307, SECOND: sum(r["ais"][1]["score"] for r in reveals)}
    assert summary["score"] == sum(r["score"] for r in reveals) > max(totals.values())
    assert summary["beat_all_ais"] is True
    assert [ai["player_closer_rounds"] for ai in summary["ai_scores"]] == [5, 5]
    assert summary["ai_scores"][1]["mean_error_km"] == pytest.approx(GEOCLIP_KM, abs=0.5)
    # The AIs' answers are copied into the rounds: a later re-import does not change a played game.
    ModelGuess.objects.filter(model_name=SECOND).update(lat=0, lon=0, distance_km=1)
    again = client.get(reverse("game-api-summary", args=[state["key"]])).json()
    assert {ai["name"]: ai["score"] for ai in again["ai_scores"]} == totals


def test_beating_only_one_of_the_two_ais_is_not_beating_both(client):
    add_second_model(make_playable(6))
    key = post(client, reverse("game-api-start"), {"opponent": MODEL, "opponents": SECOND}).json()["key"]
    reveals = play_all(client, key, north_deg=3.0)  # about 333 km: worse than ISN (222), better than GeoCLIP (556)
    assert all(not r["ais"][0]["player_closer"] and r["ais"][1]["player_closer"] for r in reveals)
    assert not any(r["better_than_all_ais"] for r in reveals)
    summary = client.get(reverse("game-api-summary", args=[key])).json()
    assert summary["beat_all_ais"] is False
    assert summary["ai_scores"][1]["score"] < summary["score"] < summary["ai_scores"][0]["score"]


def test_an_image_without_the_second_opponents_guess_is_never_chosen(client, settings):
    images = make_playable(6)
    add_second_model(images[1:])  # the first photo has no GeoCLIP guess
    assert set(selectors.playable_images(model_name=[MODEL, SECOND])) == set(images[1:])
    for seed in range(8):
        game = post(client, reverse("game-api-start"), {"opponents": [MODEL, SECOND]}).json()
        chosen = set(Round.objects.filter(game__key=game["key"]).values_list("image_id", flat=True))
        assert images[0].pk not in chosen and len(chosen) == 5
    # Against ISN alone the first photo is playable again.
    assert images[0] in selectors.playable_images(model_name=MODEL)
    # With too few images guessed by both, the start is refused, naming both models, and no game is created.
    ModelGuess.objects.filter(model_name=SECOND, image=images[1]).delete()
    games_before = Game.objects.count()
    response = post(client, reverse("game-api-start"), {"opponents": [MODEL, SECOND]})
    assert response.status_code == 503
    assert MODEL in response.json()["error"] and SECOND in response.json()["error"]
    assert Game.objects.count() == games_before


def test_bad_opponent_choices_are_refused_clearly(client, settings):
    add_second_model(make_playable(6))
    for name in ("third", "fourth"):
        ModelGuess.objects.create(image=GameImage.objects.first(), model_name=name, lat=0, lon=0, distance_km=1)
    assert settings.GAME_MAX_OPPONENTS == 3
    cases = [({"opponents": [MODEL, "nonexistent"]}, "unknown opponent"),
             ({"opponents": [MODEL, SECOND, "third", "fourth"]}, "at most 3"),
             ({"opponents": {"a": 1}}, "list of model names"),
             ({"opponents": [MODEL, 3]}, "list of model names")]
    for body, message in cases:
        response = post(client, reverse("game-api-start"), body)
        assert response.status_code == 400 and message in response.json()["error"], (body, response.content)
    assert Game.objects.count() == 0
    # The cap is a setting: with GAME_MAX_OPPONENTS = 2, three AIs are refused.
    settings.GAME_MAX_OPPONENTS = 2
    response = post(client, reverse("game-api-start"), {"opponents": [MODEL, SECOND, "third"]})
    assert response.status_code == 400 and "at most 2" in response.json()["error"]
    # Naming the same model twice is refused too (issue 13), and creates nothing.
    for body in ({"opponents": [SECOND, SECOND]}, {"opponent": MODEL, "opponents": [MODEL]},
                 {"opponents": [MODEL, SECOND, SECOND]}):
        response = post(client, reverse("game-api-start"), body)
        assert response.status_code == 400 and response["Content-Type"] == "application/json", body
    assert "named twice" in post(client, reverse("game-api-start"), {"opponents": [SECOND, SECOND]}).json()["error"]
    assert Game.objects.count() == 0


def test_default_opponents_setting_and_the_home_form(client, settings):
    add_second_model(make_playable(6))
    settings.GAME_DEFAULT_OPPONENTS = [SECOND, MODEL]
    state = post(client, reverse("game-api-start")).json()
    assert state["opponents"] == [SECOND, MODEL]
    settings.GAME_DEFAULT_OPPONENTS = []
    assert post(client, reverse("game-api-start")).json()["opponents"] == [MODEL]  # the busiest model
    page = client.get(reverse("home")).content.decode()
    assert 'name="opponent2"' in page and f'<option value="{SECOND}">' in page
    response = client.post(reverse("game-start"), {"opponent": SECOND, "opponent2": MODEL, "difficulty": "mixed"})
    assert response.status_code == 302
    game = Game.objects.order_by("-created_at").first()
    assert game.opponents == [SECOND, MODEL]
    play = client.get(response["Location"]).content.decode()
    assert SECOND in play and MODEL in play  # the legend and the summary table name both AIs


def test_leaderboard_and_challenge_show_each_ais_score(client):
    add_second_model(make_playable(6))
    key = post(client, reverse("game-api-start"), {"opponents": [MODEL, SECOND]}).json()["key"]
    reveals = play_all(client, key, north_deg=1.0)
    post(client, reverse("game-api-nickname", args=[key]), {"nickname": "Two Front"})
    geoclip_total = sum(r["ais"][1]["score"] for r in reveals)
    row = selectors.leaderboard(period="all")[0]
    assert row["name"] == "Two Front"
    assert row["ais"] == [{"name": MODEL, "score": 5 * 4307}, {"name": SECOND, "score": geoclip_total}]
    page = client.get(reverse("leaderboard")).content.decode()
    # Thousands separators, and the game's difficulty beside its opponents.
    assert f"{MODEL}: <strong>{5 * 4307:,}</strong>" in page and f"{SECOND}: <strong>{geoclip_total:,}</strong>" in page
    assert '<td class="difficulty">Mixed</td>' in page
    # A friend's replay of the challenge plays against the same two AIs.
    game = Game.objects.get(key=key)
    challenge = client.get(reverse("game-challenge", args=[game.challenge_token])).content.decode()
    assert SECOND in challenge and f"{geoclip_total:,}" in challenge
    friend = post(client, reverse("game-api-start"), {"challenge": game.challenge_token}).json()
    assert friend["opponents"] == [MODEL, SECOND]

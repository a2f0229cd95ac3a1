"""Games against 1, 2 and 3 AIs played end to end through the JSON API (issue 15 §3): every AI's answer is scored
like the player's, stored as its own row, and shown in the reveal, state, summary, leaderboard and challenge."""
import json

import pytest
from django.urls import reverse

from games import scoring, selectors
from games.models import Game, GameOpponent, ModelGuess, Round, RoundAnswer
from predictor.ml.geodesy import great_circle_km
from tests.game_factories import MODEL, make_playable

pytestmark = pytest.mark.django_db

# make_playable's model answers 2 degrees north of each truth; these answer 5 south and 8 east of it.
OTHERS = {"geoclip": (-5.0, 0.0), "vit-multitask": (0.0, 8.0)}
ALL = [MODEL, "geoclip", "vit-multitask"]


def add_model(images, name):
    d_lat, d_lon = OTHERS[name]
    for image in images:
        lat, lon = image.lat + d_lat, image.lon + d_lon
        ModelGuess.objects.create(image=image, model_name=name, lat=lat, lon=lon,
                                  distance_km=great_circle_km(image.lat, image.lon, lat, lon))


def post(client, url, data=None):
    return client.post(url, json.dumps(data or {}), content_type="application/json")


def expected_km(name, image):
    d_lat, d_lon = (2.0, 0.0) if name == MODEL else OTHERS[name]
    return scoring.error_km(true_lat=image.lat, true_lon=image.lon, lat=image.lat + d_lat, lon=image.lon + d_lon)


def play(client, key, *, north_deg=3.0):
    reveals = []
    for index in range(5):
        if index:
            assert post(client, reverse("game-api-next", args=[key])).status_code == 200
        image = Round.objects.select_related("image").get(game__key=key, index=index).image
        response = post(client, reverse("game-api-guess", args=[key]),
                        {"round": index, "lat": image.lat + north_deg, "lon": image.lon})
        assert response.status_code == 200, response.content
        reveals.append((image, response.json()["round"]))
    return reveals


@pytest.mark.parametrize("count", [1, 2, 3])
def test_a_game_against_n_ais_plays_end_to_end(client, count):
    images = make_playable(6)
    for name in ALL[1:]:
        add_model(images, name)
    names = ALL[:count]
    response = post(client, reverse("game-api-start"), {"opponents": names})
    assert response.status_code == 201, response.content
    state = response.json()
    assert state["opponents"] == names and state["opponent"] == MODEL
    assert [ai["score"] for ai in state["ai_scores"]] == [0] * count
    key = state["key"]
    reveals = play(client, key)  # about 333 km off: farther than ISN (222 km), closer than the others
    for image, reveal in reveals:
        assert [ai["name"] for ai in reveal["ais"]] == names
        for ai in reveal["ais"]:
            assert ai["distance_km"] == pytest.approx(expected_km(ai["name"], image))
            assert ai["score"] == scoring.score(ai["distance_km"])
            assert ai["player_closer"] == (ai["name"] != MODEL)
            assert ai["place"]  # every AI's answer is named on the map's terms
        assert reveal["model_score"] == reveal["ais"][0]["score"] and reveal["better_than_model"] is False
        assert reveal["better_than_all_ais"] is False
    game = Game.objects.get(key=key)
    assert game.finished_at is not None
    assert list(GameOpponent.objects.filter(game=game).values_list("model_name", flat=True)) == names
    assert RoundAnswer.objects.filter(round__game=game).count() == 5 * count

    summary = client.get(reverse("game-api-summary", args=[key])).json()
    totals = [sum(reveal["ais"][i]["score"] for _, reveal in reveals) for i in range(count)]
    assert [ai["score"] for ai in summary["ai_scores"]] == totals
    assert [ai["player_closer_rounds"] for ai in summary["ai_scores"]] == [0] + [5] * (count - 1)
    for ai in summary["ai_scores"]:
        assert ai["mean_error_km"] == pytest.approx(
            sum(expected_km(ai["name"], image) for image, _ in reveals) / 5)
    assert summary["model_score"] == totals[0] and summary["better_than_model"] == 0
    assert summary["beat_all_ais"] is False  # ISN is ahead on every round

    post(client, reverse("game-api-nickname", args=[key]), {"nickname": f"Versus {count}"})
    row = selectors.leaderboard()[0]
    assert row["name"] == f"Versus {count}" and row["opponents"] == names
    assert row["ais"] == [{"name": name, "score": total} for name, total in zip(names, totals)]
    assert row["better_than_model"] == 0 and row["model_score"] == totals[0]
    board = client.get(reverse("leaderboard")).content.decode()
    assert all(name in board for name in names)

    # A challenge replays the photos against the same AIs, and shows the challenger's score beside each.
    page = client.get(summary["challenge_url"]).content.decode()
    assert all(f"{total:,}" in page for total in totals)
    challenge = post(client, reverse("game-api-start"), {"challenge": summary["challenge_url"].rstrip("/")
                                                         .rsplit("/", 1)[1]}).json()
    assert challenge["opponents"] == names
    assert challenge["challenger"]["ais"] == [{"name": n, "score": t} for n, t in zip(names, totals)]
    replay = play(client, challenge["key"], north_deg=0.5)
    assert [image.pk for image, _ in replay] == [image.pk for image, _ in reveals]
    again = client.get(reverse("game-api-summary", args=[challenge["key"]])).json()
    assert again["beat_all_ais"] is True and [ai["score"] for ai in again["ai_scores"]] == totals

    # The answers are copied at guess time: a later re-import of every model changes no played game.
    ModelGuess.objects.update(lat=0, lon=0, distance_km=1)
    after = client.get(reverse("game-api-summary", args=[key])).json()
    assert [ai["score"] for ai in after["ai_scores"]] == totals


def test_the_home_form_offers_one_choice_per_allowed_ai_and_starts_a_three_ai_game(client, settings):
    images = make_playable(6)
    for name in ALL[1:]:
        add_model(images, name)
    page = client.get(reverse("home")).content.decode()
    assert 'name="opponent2"' in page and 'name="opponent3"' in page and 'name="opponent4"' not in page
    response = client.post(reverse("game-start"), {"opponent": ALL[2], "opponent2": ALL[0], "opponent3": ALL[1],
                                                   "difficulty": "mixed"})
    assert response.status_code == 302
    game = Game.objects.get()
    assert game.opponents == [ALL[2], ALL[0], ALL[1]]
    play_page = client.get(response["Location"]).content.decode()
    assert play_page.count('class="legend-ai"') == 3
    settings.GAME_MAX_OPPONENTS = 2
    page = client.get(reverse("home")).content.decode()
    assert 'name="opponent2"' in page and 'name="opponent3"' not in page


def test_default_opponents_take_up_to_the_maximum(client, settings):
    images = make_playable(6)
    for name in ALL[1:]:
        add_model(images, name)
    settings.GAME_DEFAULT_OPPONENTS = ["vit-multitask", MODEL, "geoclip"]
    assert post(client, reverse("game-api-start")).json()["opponents"] == ["vit-multitask", MODEL, "geoclip"]
    settings.GAME_MAX_OPPONENTS = 2
    assert selectors.default_opponents() == ["vit-multitask", MODEL]


def test_the_admin_lists_every_ai_of_a_game_and_each_answer(client, admin_client):
    images = make_playable(6)
    for name in ALL[1:]:
        add_model(images, name)
    key = post(client, reverse("game-api-start"), {"opponents": ALL}).json()["key"]
    reveal = play(client, key)[0][1]
    game = Game.objects.get(key=key)
    listing = admin_client.get(reverse("admin:games_game_changelist")).content.decode()
    assert ", ".join(ALL) in listing
    filtered = admin_client.get(reverse("admin:games_game_changelist") + "?opponent_rows__model_name=geoclip")
    assert filtered.status_code == 200 and str(game.key) in filtered.content.decode()
    page = admin_client.get(reverse("admin:games_game_change", args=[game.pk])).content.decode()
    third = reveal["ais"][2]
    assert f"{third['name']}: {third['distance_km']:.1f} km · {third['score']}" in page

"""Difficulty: images rated easy / medium / hard from model and player errors; games started at a difficulty."""
from __future__ import annotations

import json

import pytest
from django.core.management import call_command
from django.urls import reverse

from games import difficulty, services
from games.models import Game, GameImage
from tests.game_factories import PLACES, make_image

pytestmark = pytest.mark.django_db


def rated_images(count: int = 6) -> list[GameImage]:
    """`count` playable images whose model error grows with the index (1, 2, 3... degrees of latitude off)."""
    return [make_image(index=i, lat=lat, lon=lon, model_lat=lat + (1 if lat < 0 else -1) * (i + 1), model_lon=lon)
            for i, (lat, lon) in enumerate(PLACES[:count])]


def levels() -> dict[int, str]:
    return dict(GameImage.objects.values_list("id", "difficulty"))


def test_blend_uses_players_only_once_they_have_played_enough():
    assert difficulty.difficulty_km(model_km=100, player_mean_km=900, rounds_played=2) == 100
    assert difficulty.difficulty_km(model_km=100, player_mean_km=900, rounds_played=3) == 500
    assert difficulty.difficulty_km(model_km=None, player_mean_km=900, rounds_played=3) == 900
    assert difficulty.difficulty_km(model_km=None, player_mean_km=None, rounds_played=0) is None


def test_images_are_split_in_thirds_and_unguessed_ones_stay_unrated():
    images = rated_images(6)
    unguessed = make_image(index=9, lat=1, lon=1)
    counts = difficulty.recompute_difficulty()
    assert counts == {"easy": 2, "medium": 2, "hard": 2, "": 1}
    rating = levels()
    assert [rating[i.pk] for i in images] == ["easy", "easy", "medium", "medium", "hard", "hard"]
    assert rating[unguessed.pk] == ""
    assert GameImage.objects.get(pk=images[0].pk).difficulty_km == pytest.approx(111.2, abs=1)


def test_players_far_off_make_an_easy_image_hard(settings):
    settings.GAME_ROUNDS = 6
    images = rated_images(6)
    for n in range(3):  # three games where players are 60 degrees off on the model's easiest image
        game = services.start_game(session_key=f"s{n}", seed=n)
        for round_ in game.rounds.order_by("index"):
            services.start_next_round(game=game)
            off = 60 if round_.image_id == images[0].pk else 0
            services.submit_guess(game=game, round_index=round_.index, lat=round_.image.lat - off,
                                  lon=round_.image.lon)
    difficulty.recompute_difficulty()
    assert levels()[images[0].pk] == "hard"


def test_easy_and_hard_games_draw_only_images_of_that_rating(settings):
    settings.GAME_ROUNDS = 2
    images = rated_images(6)
    difficulty.recompute_difficulty()
    easy = services.start_game(session_key="e", difficulty="easy")
    hard = services.start_game(session_key="h", difficulty="hard")
    mixed = services.start_game(session_key="m", seed=3)
    assert set(easy.rounds.values_list("image_id", flat=True)) == {images[0].pk, images[1].pk}
    assert set(hard.rounds.values_list("image_id", flat=True)) == {images[4].pk, images[5].pk}
    assert (easy.difficulty, hard.difficulty, mixed.difficulty) == ("easy", "hard", "mixed")
    settings.GAME_ROUNDS = 3
    with pytest.raises(services.NoPlayableImages, match="A hard game needs 3 playable images rated hard"):
        services.start_game(session_key="h2", difficulty="hard")
    with pytest.raises(services.GameError, match="unknown difficulty 'brutal'"):
        services.start_game(session_key="x", difficulty="brutal")


def test_the_api_and_the_home_page_start_games_at_a_difficulty(client, settings):
    settings.GAME_ROUNDS = 2
    rated_images(6)
    difficulty.recompute_difficulty()
    response = client.post(reverse("game-api-start"), json.dumps({"difficulty": "hard"}),
                           content_type="application/json")
    assert response.status_code == 201
    assert Game.objects.get(key=response.json()["key"]).difficulty == "hard"
    bad = client.post(reverse("game-api-start"), json.dumps({"difficulty": "brutal"}), content_type="application/json")
    assert bad.status_code == 400 and "unknown difficulty" in bad.json()["error"]
    home = client.get(reverse("home")).content.decode()
    assert '<option value="easy">Easy</option>' in home and '<option value="hard">Hard</option>' in home
    started = client.post(reverse("game-start"), {"difficulty": "easy"})
    assert started.status_code == 302
    assert Game.objects.order_by("-id").first().difficulty == "easy"


def test_the_command_rates_the_images(capsys):
    rated_images(3)
    call_command("recompute_difficulty")
    assert "difficulty: 1 easy, 1 medium, 1 hard, 0 unrated" in capsys.readouterr().out

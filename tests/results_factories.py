"""Played games for the /results/ tests: real games (games.services) whose people's guesses are near or far."""
from __future__ import annotations

from games import services
from games.models import GameImage, Round
from tests.game_factories import MODEL, make_playable

NEAR_DEG, FAR_DEG = 0.5, 5.0  # the person's guess north of the truth: ~56 km (beats the model's ~222 km) or ~556 km
SCENE_OF_INDEX = ["urban", "natural", "indoor", "urban", "natural", "indoor", "urban", "natural", "indoor", "urban"]


def scened_images(count: int = 6) -> list[GameImage]:
    """Playable images (the model 2° north of each truth) with scene probabilities cycling urban/natural/indoor."""
    images = make_playable(count)
    for i, image in enumerate(images):
        probabilities = {"indoor": 0.1, "natural": 0.1, "urban": 0.1}
        probabilities[SCENE_OF_INDEX[i]] = 0.8
        GameImage.objects.filter(pk=image.pk).update(p_indoor=probabilities["indoor"],
                                                     p_natural=probabilities["natural"],
                                                     p_urban=probabilities["urban"])
    return images


def person_near(image: GameImage) -> bool:
    """Whether the person guesses close to this photo (even positions in tests.game_factories.PLACES)."""
    return int(image.source_id.split("_")[0]) % 2 == 0


def play_games(count: int, *, user=None, opponent: str = MODEL) -> list[Round]:
    """`count` finished games against `opponent`; the person is near on even photos and far on odd ones."""
    rounds = []
    for g in range(count):
        game = services.start_game(user=user, session_key=f"session-{g}", opponent_model=opponent, seed=1000 + g)
        for index in range(game.rounds.count()):
            round_ = services.start_next_round(game=game)
            image = round_.image
            shift = NEAR_DEG if person_near(image) else FAR_DEG
            rounds.append(services.submit_guess(game=game, round_index=index, lat=image.lat + shift,
                                                lon=image.lon + 0.04321))
        services.finish_game(game=game)
    return rounds

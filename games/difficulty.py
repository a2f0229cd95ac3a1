"""How hard each game image is, from how far the reference model and the players were from the truth.

An image's difficulty distance is the reference model's error, blended half and half with the players' mean error
once at least MIN_PLAYER_ROUNDS rounds have been played on it. Images are then split into thirds by that
distance: the closest third is easy, the farthest hard. Images with neither a model guess nor players stay unrated.
"""
from __future__ import annotations

from games import selectors
from games.models import Difficulty, GameImage

MIN_PLAYER_ROUNDS = 3
LEVELS = ("easy", "mixed", "hard")


def difficulty_km(*, model_km: float | None, player_mean_km: float | None, rounds_played: int) -> float | None:
    """The distance an image is ranked by; None when nothing is known about it."""
    if player_mean_km is not None and rounds_played >= MIN_PLAYER_ROUNDS:
        return player_mean_km if model_km is None else (model_km + player_mean_km) / 2
    return model_km


def recompute_difficulty() -> dict[str, int]:
    """Rate every game image (easy / medium / hard by thirds); returns how many images got each rating."""
    model = selectors.reference_model()
    rows = list(selectors.with_curation_stats(GameImage.objects.order_by("id"), model_name=model)
                .values_list("id", "model_error_km", "mean_player_km", "rounds_played"))
    scored = sorted(((difficulty_km(model_km=m, player_mean_km=p, rounds_played=n), pk) for pk, m, p, n in rows
                     if difficulty_km(model_km=m, player_mean_km=p, rounds_played=n) is not None))
    rating = {pk: ("", None) for pk, *_ in rows}
    for rank, (km, pk) in enumerate(scored):
        third = 3 * rank // len(scored)
        rating[pk] = ((Difficulty.EASY, Difficulty.MEDIUM, Difficulty.HARD)[third], km)
    images = list(GameImage.objects.only("id", "difficulty", "difficulty_km"))
    changed = []
    for image in images:
        level, km = rating[image.pk]
        if (image.difficulty, image.difficulty_km) != (level, km):
            image.difficulty, image.difficulty_km = level, km
            changed.append(image)
    GameImage.objects.bulk_update(changed, ["difficulty", "difficulty_km"], batch_size=500)
    counts = {level: 0 for level in ("easy", "medium", "hard", "")}
    for level, _km in rating.values():
        counts[level] += 1
    return counts

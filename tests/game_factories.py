"""Factories for play-mode tests: game images with generated JPEGs on disk and a model's stored guesses."""
from __future__ import annotations

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from games.licences import licence_fields
from games.models import GameImage, ModelGuess, RoundAnswer
from predictor.ml.geodesy import great_circle_km
from tests.conftest import make_jpeg

MODEL = "ISNs(M, f*, S3)"
# Well-separated true positions, and a model that is off by a known amount on each.
PLACES = [(48.8584, 2.2945), (40.6892, -74.0445), (-33.8568, 151.2153), (35.6586, 139.7454), (-22.9519, -43.2105),
          (27.1751, 78.0421), (51.5007, -0.1246), (-13.1631, -72.5450), (64.1466, -21.9426), (30.0444, 31.2357)]


def make_image(*, index: int, lat: float, lon: float, model_lat: float | None = None, model_lon: float | None = None,
               licence: str = "CC-BY 2.0", model_name: str = MODEL, with_file: bool = True) -> GameImage:
    name = ""
    if with_file:
        name = default_storage.save(f"game_images/test-{index:04d}.jpg",
                                    ContentFile(make_jpeg(colour=(20 * index % 255, 90, 160))))
    image = GameImage.objects.create(
        image=name, lat=lat, lon=lon, source_id=f"{1000 + index}_abc{index}_1_{index}@N00.jpg",
        author=f"author {index}", licence_name=licence, **licence_fields(licence),
        licence_url="https://creativecommons.org/licenses/by/2.0/" if licence.startswith("CC") else "",
        source_url=f"https://example.org/photo/{index}")
    if model_lat is not None:
        ModelGuess.objects.create(image=image, model_name=model_name, lat=model_lat, lon=model_lon,
                                  distance_km=great_circle_km(lat, lon, model_lat, model_lon))
    return image


def make_playable(count: int = 6, *, model_name: str = MODEL) -> list[GameImage]:
    """`count` playable images; the model guesses 2 degrees north of each truth (about 222 km off)."""
    return [make_image(index=i, lat=lat, lon=lon, model_lat=lat + 2.0, model_lon=lon, model_name=model_name)
            for i, (lat, lon) in enumerate(PLACES[:count])]


def ai_scores_and_errors(game) -> list[tuple[str, list[int], list[float]]]:
    """Each AI opponent of `game` in order: its name, and its stored per-round scores and errors (rounds in order)."""
    rows: dict[int, tuple[str, list[int], list[float]]] = {}
    for answer in (RoundAnswer.objects.filter(round__game=game).select_related("opponent")
                   .order_by("opponent__position", "round__index")):
        name, scores, errors = rows.setdefault(answer.opponent.position, (answer.opponent.model_name, [], []))
        scores.append(answer.score)
        errors.append(answer.distance_km)
    return [rows[position] for position in sorted(rows)]

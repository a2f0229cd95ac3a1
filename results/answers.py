"""The played rounds as /results/ reads them: the photo, its truth and scene, the person's guess and every AI answer
of the round.

`model_answers` is the one place that knows how the AIs' answers of a round are stored; everything else in this app
reads them through it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

from games.models import Round, RoundAnswer

SCENES = ("indoor", "natural", "urban")


@dataclass(frozen=True)
class Answer:
    model: str
    lat: float
    lon: float
    distance_km: float
    score: int


@dataclass
class PlayedRound:
    round_id: int
    photo_id: str  # the Im2GPS IMG_ID of the photo (GameImage.source_id)
    image_id: int
    true_lat: float
    true_lon: float
    scene: str  # "indoor", "natural", "urban" (the highest of the photo's scene probabilities) or "unknown"
    guess_lat: float
    guess_lon: float
    distance_km: float
    score: int
    answers: list[Answer] = field(default_factory=list)


def scene_of(p_indoor: float | None, p_natural: float | None, p_urban: float | None) -> str:
    probabilities = (p_indoor, p_natural, p_urban)
    if any(p is None for p in probabilities):
        return "unknown"
    return SCENES[max(range(3), key=lambda i: probabilities[i])]


def model_answers(*, id_from: int, id_to: int) -> dict[int, list[Answer]]:
    """{round id: the AIs' answers in the game's order of opponents} for the rounds with id_from <= id <= id_to:
    one RoundAnswer row per (round, opponent), named by its GameOpponent."""
    rows = (RoundAnswer.objects.filter(round_id__gte=id_from, round_id__lte=id_to)
            .order_by("round_id", "opponent__position")
            .values_list("round_id", "opponent__model_name", "lat", "lon", "distance_km", "score"))
    out: dict[int, list[Answer]] = {}
    for rid, name, lat, lon, km, score in rows:
        out.setdefault(rid, []).append(Answer(name, lat, lon, km, score))
    return out


def played_rounds(*, chunk_size: int = 5000) -> Iterator[PlayedRound]:
    """Every guessed round, in id order, with its AI answers (`model_answers`), read in chunks of `chunk_size`."""
    last = 0
    while True:
        rows = list(Round.objects.filter(id__gt=last, guessed_at__isnull=False, distance_km__isnull=False)
                    .order_by("id")
                    .values_list("id", "image_id", "image__source_id", "image__lat", "image__lon", "image__p_indoor",
                                 "image__p_natural", "image__p_urban", "guess_lat", "guess_lon", "distance_km",
                                 "score")[:chunk_size])
        if not rows:
            return
        answers = model_answers(id_from=rows[0][0], id_to=rows[-1][0])
        for rid, image_id, source_id, lat, lon, pi, pn, pu, glat, glon, km, score in rows:
            yield PlayedRound(round_id=rid, photo_id=source_id, image_id=image_id, true_lat=lat, true_lon=lon,
                              scene=scene_of(pi, pn, pu), guess_lat=glat, guess_lon=glon, distance_km=km,
                              score=score or 0, answers=answers.get(rid, []))
        last = rows[-1][0]

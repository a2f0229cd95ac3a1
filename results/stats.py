"""People against models: the numbers of /results/ from the played rounds (pure NumPy, no Django).

Every comparison is on the same photos: a model's figures are computed over the rounds in which it answered, and
the people's figures beside them over exactly those rounds. "People beat the model" when the person's guess was
strictly closer to the truth than the model's answer.
"""
from __future__ import annotations

import numpy as np

from results.answers import SCENES, PlayedRound

ALL_MODELS = "all models"
SCORE_EDGES = [float(x) for x in np.linspace(0, 5000, 11)]


def _summary(people_km: np.ndarray, model_km: np.ndarray) -> dict:
    n = int(people_km.size)
    if n == 0:
        return {"rounds": 0}
    return {"rounds": n,
            "people_median_km": round(float(np.median(people_km)), 1),
            "people_mean_km": round(float(np.mean(people_km)), 1),
            "model_median_km": round(float(np.median(model_km)), 1),
            "model_mean_km": round(float(np.mean(model_km)), 1),
            "people_beat_rate": round(float(np.mean(people_km < model_km)), 4),
            "people_beat_percent": round(100 * float(np.mean(people_km < model_km)), 1),
            "ties": int(np.sum(people_km == model_km))}


def _histogram(scores: np.ndarray) -> list[int]:
    counts, _ = np.histogram(np.asarray(scores, dtype=float), bins=SCORE_EDGES)
    return [int(c) for c in counts]


def compute(rounds: list[PlayedRound], *, continents: dict[int, str]) -> dict:
    """The /results/ numbers: {"rounds", "people", "models": [{name, overall, by_scene, by_continent, scores}],
    "overall": {...} (every (round, model) pair pooled), "score_edges"}."""
    pair_model, pair_round = [], []
    people_km = np.array([r.distance_km for r in rounds], dtype=float)
    people_score = np.array([r.score for r in rounds], dtype=float)
    scenes = np.array([r.scene for r in rounds], dtype=object)
    conts = np.array([continents.get(r.image_id, "unknown") for r in rounds], dtype=object)
    model_km, model_score = [], []
    for i, r in enumerate(rounds):
        for answer in r.answers:
            pair_model.append(answer.model)
            pair_round.append(i)
            model_km.append(answer.distance_km)
            model_score.append(answer.score)
    pair_model = np.array(pair_model, dtype=object)
    pair_round = np.array(pair_round, dtype=np.int64)
    model_km = np.array(model_km, dtype=float)
    model_score = np.array(model_score, dtype=float)
    pk, ps = people_km[pair_round], people_score[pair_round]
    pair_scene, pair_cont = scenes[pair_round], conts[pair_round]

    def block(mask: np.ndarray) -> dict:
        by_scene = {s: _summary(pk[mask & (pair_scene == s)], model_km[mask & (pair_scene == s)])
                    for s in (*SCENES, "unknown")}
        by_continent = {c: _summary(pk[mask & (pair_cont == c)], model_km[mask & (pair_cont == c)])
                        for c in sorted(set(pair_cont[mask].tolist()))}
        return {"overall": _summary(pk[mask], model_km[mask]),
                "by_scene": {s: v for s, v in by_scene.items() if v["rounds"]},
                "by_continent": by_continent,
                "scores": {"people": _histogram(ps[mask]), "model": _histogram(model_score[mask])}}

    models = []
    names = sorted(set(pair_model.tolist()), key=lambda name: (-int(np.sum(pair_model == name)), name))
    for name in names:
        models.append({"name": name, **block(pair_model == name)})
    return {
        "rounds": len(rounds),
        "photos": len({r.image_id for r in rounds}),
        "people": {"rounds": len(rounds),
                   "median_km": round(float(np.median(people_km)), 1) if len(rounds) else None,
                   "mean_km": round(float(np.mean(people_km)), 1) if len(rounds) else None,
                   "scores": _histogram(people_score)},
        "overall": {"name": ALL_MODELS, **block(np.ones(pair_model.size, dtype=bool))},
        "models": models,
        "score_edges": SCORE_EDGES,
    }

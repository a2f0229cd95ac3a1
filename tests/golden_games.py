"""A fixed set of play-mode games written in the schema of games migration 0004 (numbered opponent columns:
`Game.opponent_model` / `second_opponent`, `Round.model_*` / `model2_*`), and what the app shows of them.

The rows go in through an apps registry (a migration state's historical models), so the same scenario can be
written before a schema change and read back after it. `tests/golden/games_before_opponent_rows.json` holds what
the code of that schema (commit "golden test", issue 15 §3) answered for these rows; the migration test compares
the code of today, on the migrated rows, with it.
"""
from __future__ import annotations

import datetime as dt
import json
import uuid
from pathlib import Path

from django.core.serializers.json import DjangoJSONEncoder

from games import scoring

GOLDEN = Path(__file__).resolve().parent / "golden" / "games_before_opponent_rows.json"
ISN = "ISNs(M, f*, S3)"
CLIP = "geoclip"
T0 = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.timezone.utc)
PLACES = [(48.8584, 2.2945), (40.6892, -74.0445), (-33.8568, 151.2153), (35.6586, 139.7454), (-22.9519, -43.2105),
          (27.1751, 78.0421), (51.5007, -0.1246), (-13.1631, -72.5450)]
# Where each model answers, relative to the truth (degrees of latitude, longitude).
MODEL_SHIFT = {ISN: (2.0, 0.0), CLIP: (-5.0, 1.5)}

# (name, opponents, mode, challenge of, image order, player's shift per guessed round, rounds shown, finished,
#  nickname, with a user)
GAMES = [
    ("one-ai-finished", [ISN], "classic", None, [0, 1, 2, 3, 4],
     [(1.0, 0.0), (3.0, 0.0), (0.0, 0.5), (10.0, 10.0), (0.01, 0.0)], 5, True, "Solo", False),
    ("two-ais-finished", [ISN, CLIP], "classic", None, [3, 4, 5, 6, 7],
     [(1.0, 1.0), (4.0, 0.0), (0.2, 0.2), (30.0, -20.0), (2.5, 0.0)], 5, True, "Duo", False),
    ("two-ais-half-played", [CLIP, ISN], "classic", None, [1, 3, 5, 7, 0],
     [(0.5, 0.0), (6.0, 0.0)], 3, False, "", False),
    ("one-ai-unplayed", [ISN], "classic", None, [2, 4, 6, 0, 1], [], 1, False, "", False),
    ("challenge-of-two", [ISN, CLIP], "challenge", "two-ais-finished", [3, 4, 5, 6, 7],
     [(0.1, 0.0), (8.0, 8.0), (2.0, 0.0), (1.0, -1.0), (5.0, 5.0)], 5, True, "", True),
    ("challenge-of-one-unfinished", [ISN], "challenge", "one-ai-finished", [0, 1, 2, 3, 4],
     [(2.0, 2.0)], 2, False, "Chaser", False),
]


def game_key(name: str) -> uuid.UUID:
    return uuid.uuid5(uuid.NAMESPACE_URL, f"geoweb-golden/{name}")


def build_old_schema(apps) -> None:
    """Write the scenario with the models of `apps` (a registry at games migration 0004)."""
    GameImage = apps.get_model("games", "GameImage")
    Game = apps.get_model("games", "Game")
    Round = apps.get_model("games", "Round")
    User = apps.get_model("auth", "User")
    images = [GameImage.objects.create(
        image=f"game_images/golden-{i}.jpg", lat=lat, lon=lon, source_id=f"golden-{i}", author=f"author {i}",
        title=f"title {i}", licence_name="CC-BY 2.0", licence_url="https://creativecommons.org/licenses/by/2.0/",
        source_url=f"https://example.org/photo/{i}", is_open_licence=True, licence_kind="open")
        for i, (lat, lon) in enumerate(PLACES)]
    user = User.objects.create(username="golden-user", password="!")
    games = {}
    for number, (name, opponents, mode, source, order, shifts, shown, finished, nickname, with_user) in \
            enumerate(GAMES):
        start = T0 + dt.timedelta(hours=number)
        game = Game.objects.create(
            key=game_key(name), challenge_token=f"golden-token-{number}", user=user if with_user else None,
            session_key="" if with_user else f"session-{name}", nickname=nickname, seed=1000 + number, mode=mode,
            challenge_of=games.get(source), opponent_model=opponents[0],
            second_opponent=opponents[1] if len(opponents) > 1 else "", difficulty="mixed",
            finished_at=start + dt.timedelta(minutes=10) if finished else None)
        Game.objects.filter(pk=game.pk).update(created_at=start)
        games[name] = game
        for index, image_number in enumerate(order):
            image = images[image_number]
            row = {"game": game, "index": index, "image": image, "photo_token": f"golden-photo-{number}-{index}"}
            if index < shown:
                row["started_at"] = start + dt.timedelta(minutes=index)
            if index < len(shifts):
                lat, lon = image.lat + shifts[index][0], image.lon + shifts[index][1]
                km = scoring.error_km(true_lat=image.lat, true_lon=image.lon, lat=lat, lon=lon)
                row.update(guess_lat=lat, guess_lon=lon, distance_km=km, score=scoring.score(km),
                           guessed_at=row["started_at"] + dt.timedelta(seconds=17 + 3 * index))
                for prefix, model in zip(("model", "model2"), opponents):
                    m_lat, m_lon = image.lat + MODEL_SHIFT[model][0], image.lon + MODEL_SHIFT[model][1]
                    m_km = scoring.error_km(true_lat=image.lat, true_lon=image.lon, lat=m_lat, lon=m_lon)
                    row.update({f"{prefix}_lat": m_lat, f"{prefix}_lon": m_lon, f"{prefix}_distance_km": m_km,
                                f"{prefix}_score": scoring.score(m_km)})
            Round.objects.create(**row)


def outputs() -> dict:
    """What the app shows of the scenario's games, through the current code: each game's state (the API's
    GET /api/games/<key>/), the summaries of the finished ones (GET …/summary/, the challenge page), the
    leaderboard and the curation counts of how often players beat the reference model."""
    from games import selectors
    from games.models import Game, GameImage

    result: dict = {"games": {}, "leaderboard": selectors.leaderboard(period="all", limit=50)}
    for name, *_ in GAMES:
        game = Game.objects.get(key=game_key(name))
        entry = {"opponents": game.opponents, "state": selectors.game_state(game)}
        if game.finished_at is not None:
            entry["summary"] = selectors.game_summary(game)
        result["games"][name] = entry
    stats = selectors.with_curation_stats(GameImage.objects.order_by("source_id"), model_name=ISN)
    result["curation"] = list(stats.values_list("source_id", "rounds_played", "beat_model"))
    return normalise(result)


def normalise(data):
    """JSON types (datetimes as ISO text) with floats rounded to micro-units, so stored and live figures compare."""
    def walk(value):
        if isinstance(value, float):
            return round(value, 6)
        if isinstance(value, list):
            return [walk(v) for v in value]
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()}
        return value
    return walk(json.loads(json.dumps(data, cls=DjangoJSONEncoder)))

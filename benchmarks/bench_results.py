"""/results/ with a synthetic table of played rounds: how long the recompute takes and how fast the page serves.

Builds a throwaway database (SQLite in a temporary data folder; or the database in DATABASE_URL, which must be an
empty scratch database) with `--photos` game photos and `--rounds` guessed rounds in 5-round games, every game
against one published model and every third game against a second one too. Then it times:

  recompute   results.services.recompute_results() (figures, charts, CSV export), as the command/job runs it
  page        GET /results/ (the cached figures), `--requests` times through Django's test client
  chart       GET /results/chart/median-by-model.svg
  export      GET /results/rounds.csv (the cached CSV)

    nice -n 10 .venv/bin/python benchmarks/bench_results.py --rounds 100000
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODELS = ("ISNs(M, f*, S3)", "base(M, f*)")


def _setup(data_dir: str) -> None:
    os.environ.setdefault("GEOWEB_DATA_DIR", data_dir)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "geoweb.settings")
    os.environ["GEOWEB_RESULTS_REFRESH_S"] = "0"
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def _populate(*, photos: int, rounds: int, seed: int) -> None:
    from django.db import transaction
    from django.utils import timezone

    from games.models import Game, GameImage, GameOpponent, Round, RoundAnswer
    from games.scoring import score
    from predictor.ml.geodesy import great_circle_km

    rng = random.Random(seed)
    now = timezone.now()
    images = []
    for i in range(photos):
        lat, lon = rng.uniform(-55, 70), rng.uniform(-180, 180)
        p = [rng.random() for _ in range(3)]
        images.append(GameImage(lat=lat, lon=lon, source_id=f"{i}_bench_{i}@N00.jpg", p_indoor=p[0], p_natural=p[1],
                                p_urban=p[2], licence_name="CC BY 2.0", is_open_licence=True, licence_kind="by"))
    with transaction.atomic():
        GameImage.objects.bulk_create(images, batch_size=2000)
    images = list(GameImage.objects.order_by("id").values_list("id", "lat", "lon"))

    def guess_near(lat, lon, spread):
        return (max(-90.0, min(90.0, lat + rng.gauss(0, spread))),
                ((lon + rng.gauss(0, spread) + 180) % 360) - 180)

    games = rounds // 5
    with transaction.atomic():
        Game.objects.bulk_create([Game(challenge_token=f"bench{g}", session_key=f"s{g}", seed=g, finished_at=now)
                                  for g in range(games)], batch_size=2000)
        game_ids = list(Game.objects.order_by("id").values_list("id", flat=True))
        GameOpponent.objects.bulk_create(
            [GameOpponent(game_id=game_id, position=0, model_name=MODELS[0]) for game_id in game_ids]
            + [GameOpponent(game_id=game_id, position=1, model_name=MODELS[1]) for n, game_id in enumerate(game_ids)
               if n % 3 == 0], batch_size=5000)
    opponents: dict[int, list[int]] = {}
    for opponent_id, game_id in GameOpponent.objects.order_by("game_id", "position").values_list("id", "game_id"):
        opponents.setdefault(game_id, []).append(opponent_id)
    pending = []  # (Round, [(opponent id, lat, lon, km)])
    for n, game_id in enumerate(game_ids):
        for index in range(5):
            image_id, lat, lon = images[rng.randrange(len(images))]
            glat, glon = guess_near(lat, lon, rng.choice((0.5, 5, 20, 40)))
            km = float(great_circle_km(lat, lon, glat, glon))
            answers = []
            for opponent_id in opponents[game_id]:
                mlat, mlon = guess_near(lat, lon, rng.choice((0.1, 2, 10, 30)))
                answers.append((opponent_id, mlat, mlon, float(great_circle_km(lat, lon, mlat, mlon))))
            pending.append((Round(game_id=game_id, index=index, image_id=image_id, photo_token=f"b{n}x{index}",
                                  guess_lat=glat, guess_lon=glon, distance_km=km, score=score(km), started_at=now,
                                  guessed_at=now), answers))
        if len(pending) >= 5000 or n == len(game_ids) - 1:
            with transaction.atomic():
                Round.objects.bulk_create([r for r, _ in pending])  # ids set on SQLite and PostgreSQL
                RoundAnswer.objects.bulk_create([
                    RoundAnswer(round_id=r.pk, opponent_id=o, lat=a, lon=b, distance_km=k, score=score(k))
                    for r, answers in pending for o, a, b, k in answers])
            pending = []


def _timed_gets(client, path: str, count: int) -> list[float]:
    times = []
    for _ in range(count):
        started = time.perf_counter()
        response = client.get(path)
        body = response.content
        times.append(1000 * (time.perf_counter() - started))
        assert response.status_code == 200 and body, (path, response.status_code)
    return times


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=100_000)
    parser.add_argument("--photos", type=int, default=3_000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="geoweb-bench-results-") as data_dir:
        _setup(data_dir)
        from django.conf import settings
        from django.test import Client

        from games.models import Round
        from results import services

        engine = settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1]
        started = time.perf_counter()
        _populate(photos=args.photos, rounds=args.rounds, seed=args.seed)
        print(f"database: {engine}; {Round.objects.count():,} guessed rounds on {args.photos:,} photos "
              f"(built in {time.perf_counter() - started:.1f} s); {platform.processor() or platform.machine()}, "
              f"{os.cpu_count()} CPUs")
        started = time.perf_counter()
        snapshot = services.recompute_results()
        recompute = time.perf_counter() - started
        print(f"recompute: {recompute:.2f} s ({snapshot.data['rounds']:,} rounds, {len(snapshot.data['models'])} "
              f"models, {len(snapshot.charts)} charts, CSV {snapshot.data['export_bytes'] / 1e6:.1f} MB)")
        client = Client(HTTP_HOST="localhost")
        client.get("/results/")  # warm: templates, URL resolver
        for label, path, count in (("page", "/results/", args.requests),
                                   ("chart", "/results/chart/median-by-model.svg", args.requests),
                                   ("export", "/results/rounds.csv", max(5, args.requests // 20))):
            times = _timed_gets(client, path, count)
            print(f"{label:7s} GET {path}: p50 {statistics.median(times):.1f} ms, p99 {_pct(times, 0.99):.1f} ms, "
                  f"{1000 / statistics.mean(times):.0f} req/s in one thread ({count} requests)")


if __name__ == "__main__":
    main()

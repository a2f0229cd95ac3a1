"""Scale-out load on loopback: many websocket clients each upload a photo and follow its analysis across several
Daphne processes and `run_worker` processes (once per worker count, to show scaling), then many game players play
whole games against the JSON API. Prints throughput, latency percentiles and every lost or mixed-up result.

    .venv/bin/python benchmarks/bench_scaleout.py --clients 500 --web 2 --workers 1,2 --players 200

--http picks who serves HTTP (uploads, game API): "pooled" (the default: Daphne with GeoWeb's pooled handler, also
serving the websockets), "stock" (Daphne with Django's stock ASGI handler, benchmarks/asgi_stock.py) or "gunicorn"
(one gunicorn, gthread workers, as deploy/ runs it; the --web Daphne processes then serve only the websockets).

Needs PostgreSQL (the benchmark creates and drops its own database on the server of --database-url) and
redis-server (a private one on a spare port unless --redis-url is given). The clients spread over the web processes
round-robin by themselves, in place of nginx: client i uploads to web process i mod N and opens its websocket on
process (i + 1) mod N, so every result must cross Redis to reach its client. Nothing leaves 127.0.0.1.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.scaleout_harness import (  # noqa: E402
    AnalysisWatch,
    RedisServer,
    app_environment,
    free_port,
    start_web,
    start_worker,
    watch_analysis,
)

STAGES = ["scene", "partitions", "heatmap", "estimate", "cam", "done"]


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]

    return {"p50": at(0.50), "p90": at(0.90), "p95": at(0.95), "p99": at(0.99), "max": ordered[-1],
            "mean": statistics.fmean(ordered)}


def fmt_ms(stats: dict[str, float]) -> str:
    return " ".join(f"{k} {v * 1000:.0f}" for k, v in stats.items()) + " (ms)"


# --- setup -------------------------------------------------------------------------------------------------------

def create_database(admin_url: str, name: str) -> str:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return admin_url.rsplit("/", 1)[0] + f"/{name}"


def drop_database(admin_url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def prepare_django(*, database_url: str, redis_url: str, data_dir: Path, model_dir: Path, secret_key: str,
                   users: int, game_images: int) -> list[str]:
    """Migrate, install the tiny bundle, create users (returns one session key each) and playable game images."""
    os.environ.update({"DJANGO_SETTINGS_MODULE": "geoweb.settings", "DATABASE_URL": database_url,
                       "REDIS_URL": redis_url, "GEOWEB_DATA_DIR": str(data_dir), "GEOWEB_MODEL_DIR": str(model_dir),
                       "GEOWEB_SECRET_KEY": secret_key, "GEOWEB_EMBEDDED_WORKER": "0"})
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.test import Client

    from predictor import policy, registry
    from predictor.ml.isn import make_tiny_bundle
    from tests.game_factories import make_playable

    call_command("migrate", verbosity=0)
    registry.install_bundle(make_tiny_bundle(data_dir / "build" / "tiny-untrained"), activate=True)
    make_playable(game_images)
    keys = []
    for index in range(users):
        # No password: these accounts only ever log in through force_login (and hashing 50 passwords takes a while).
        user = get_user_model().objects.create_user(username=f"load{index}", password=None)
        policy.accept_terms(user)
        client = Client()
        client.force_login(user)
        keys.append(client.cookies["sessionid"].value)
    return keys


# --- the analysis load -------------------------------------------------------------------------------------------

async def one_analysis(session, *, index: int, http: list[str], ws: list[str], cookie: str, photo: bytes,
                       deadline_s: float):
    import aiohttp

    upload_url = http[index % len(http)]
    socket_url = ws[(index + 1) % len(ws)]
    csrf = secrets.token_hex(16)
    form = aiohttp.FormData()
    form.add_field("photo", photo, filename=f"photo-{index}.jpg", content_type="image/jpeg")
    started = time.monotonic()
    headers = {"Cookie": f"sessionid={cookie}; csrftoken={csrf}", "X-CSRFToken": csrf, "Accept": "application/json",
               "Referer": upload_url + "/analyze/"}
    try:
        async with session.post(upload_url + "/analyze/", data=form, headers=headers) as response:
            body = await response.text()
            if response.status != 201:
                return {"index": index, "error": f"upload answered {response.status}: {body[:200]}"}
            analysis_id = json.loads(body)["id"]
    except (aiohttp.ClientError, asyncio.TimeoutError) as error:
        return {"index": index, "error": f"upload failed: {error!r}"}
    uploaded = time.monotonic()
    watch = AnalysisWatch(analysis_id)
    watch.started_at = started
    await watch_analysis(session, base_url=socket_url, analysis_id=analysis_id, cookie=cookie,
                         deadline_s=deadline_s, watch=watch)
    return {"index": index, "id": analysis_id, "upload_s": uploaded - started, "watch": watch}


def check_results(results: list[dict]) -> dict:
    """Every client got its own complete result, identical to what the database holds."""
    from predictor.models import Analysis

    problems = []
    ids = [r["id"] for r in results if "id" in r]
    stored = {a.pk: a for a in Analysis.objects.filter(pk__in=ids)}
    for result in results:
        if "error" in result:
            problems.append(f"client {result['index']}: {result['error']}")
            continue
        watch: AnalysisWatch = result["watch"]
        kinds = [event["type"] for _, event in sorted(watch.events.items())]
        if not watch.done:
            problems.append(f"client {result['index']} (analysis {watch.analysis_id}): no done; saw {kinds}")
        elif kinds != STAGES:
            problems.append(f"client {result['index']}: events {kinds}")
        if watch.foreign:
            problems.append(f"client {result['index']}: {len(watch.foreign)} events of other analyses")
        analysis = stored.get(watch.analysis_id)
        estimate = next((e for e in watch.events.values() if e["type"] == "estimate"), None)
        if analysis is None or analysis.status != Analysis.Status.DONE:
            problems.append(f"analysis {watch.analysis_id} is not done in the database")
        elif estimate is None or (estimate["lat"], estimate["lon"]) != (analysis.summary["lat"],
                                                                         analysis.summary["lon"]):
            problems.append(f"analysis {watch.analysis_id}: the estimate the client saw differs from the stored one")
    return {"problems": problems, "ids": ids}


async def analysis_load(*, clients: int, http: list[str], ws: list[str], cookies: list[str],
                        deadline_s: float) -> dict:
    import aiohttp

    from tests.conftest import make_jpeg

    photos = [make_jpeg(320, 240, colour=(i * 37 % 255, i * 11 % 255, 90)) for i in range(16)]
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        started = time.monotonic()
        results = await asyncio.gather(*(
            one_analysis(session, index=i, http=http, ws=ws, cookie=cookies[i % len(cookies)],
                         photo=photos[i % len(photos)], deadline_s=deadline_s) for i in range(clients)))
        wall = time.monotonic() - started
    return {"results": results, "wall_s": wall}


def run_analysis_phase(*, clients: int, http: list[str], ws: list[str], cookies: list[str],
                       deadline_s: float) -> dict:
    load = asyncio.run(analysis_load(clients=clients, http=http, ws=ws, cookies=cookies, deadline_s=deadline_s))
    checked = check_results(load["results"])
    watches = [r["watch"] for r in load["results"] if "watch" in r]
    done = [w for w in watches if w.done]
    from predictor.models import Analysis

    stored = Analysis.objects.filter(pk__in=checked["ids"])
    batch_sizes = [a.timings.get("batch_size", 0) for a in stored if a.timings]
    return {
        "clients": clients,
        "done": len(done),
        "lost_or_mixed": len(checked["problems"]),
        "problems": checked["problems"][:20],
        "wall_s": load["wall_s"],
        "throughput_per_s": len(done) / load["wall_s"] if load["wall_s"] else 0.0,
        "upload_s": percentiles([r["upload_s"] for r in load["results"] if "upload_s" in r]),
        "done_s": percentiles([w.latency_s for w in done]),
        "reconnects": sum(max(0, w.connects - 1) for w in watches),
        "mean_batch": statistics.fmean(batch_sizes) if batch_sizes else 0.0,
    }


# --- the game load -----------------------------------------------------------------------------------------------

async def one_player(index: int, *, base_url: str, timings: list[float], errors: list[str]):
    import aiohttp

    csrf = secrets.token_hex(16)
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar, timeout=aiohttp.ClientTimeout(total=120)) as session:
        session.cookie_jar.update_cookies({"csrftoken": csrf})
        headers = {"X-CSRFToken": csrf, "Accept": "application/json", "Referer": base_url + "/"}

        async def call(method: str, path: str, body: dict | None = None, *, expect_json: bool = True):
            started = time.monotonic()
            try:
                async with session.request(method, base_url + path, json=body, headers=headers) as response:
                    payload = await (response.json() if expect_json else response.read())
                    timings.append(time.monotonic() - started)
                    if response.status >= 400:
                        errors.append(f"player {index}: {method} {path} -> {response.status} {str(payload)[:120]}")
                        return None
                    return payload
            except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as error:
                errors.append(f"player {index}: {method} {path} -> {error!r}")
                return None

        state = await call("POST", "/api/games/", {})
        if state is None:
            return
        key = state["key"]
        for _ in range(state["rounds_total"]):
            shown = await call("POST", f"/api/games/{key}/next/", {})
            if shown is None:
                return
            round_ = shown["round"]
            if await call("GET", round_["photo_url"], expect_json=False) is None:
                return
            guess = await call("POST", f"/api/games/{key}/guess/",
                               {"round": round_["index"], "lat": (index * 7) % 170 - 85.0, "lon": (index * 13) % 360 - 180.0})
            if guess is None:
                return
        if await call("GET", f"/api/games/{key}/summary/") is None:
            return


async def game_load(*, players: int, web: list[str]) -> dict:
    timings: list[float] = []
    errors: list[str] = []
    started = time.monotonic()
    await asyncio.gather(*(one_player(i, base_url=web[i % len(web)], timings=timings, errors=errors)
                           for i in range(players)))
    wall = time.monotonic() - started
    return {"players": players, "requests": len(timings), "errors": len(errors), "error_samples": errors[:10],
            "wall_s": wall, "requests_per_s": len(timings) / wall if wall else 0.0, "latency_s": percentiles(timings)}


# --- main --------------------------------------------------------------------------------------------------------

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=500, help="concurrent analysis clients per run")
    parser.add_argument("--web", type=int, default=2, help="Daphne processes")
    parser.add_argument("--http", choices=("pooled", "stock", "gunicorn"), default="pooled",
                        help="who serves HTTP: Daphne with the pooled or the stock handler, or gunicorn")
    parser.add_argument("--gunicorn-workers", type=int, default=5)
    parser.add_argument("--gunicorn-threads", type=int, default=8)
    parser.add_argument("--workers", default="1,2", help="worker counts, one run each (comma-separated)")
    parser.add_argument("--batch", type=int, default=32, help="analyses a worker claims at once")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="the workers' inference device")
    parser.add_argument("--players", type=int, default=200, help="concurrent game players (0 skips the game load)")
    parser.add_argument("--users", type=int, default=50, help="accounts the analysis clients are spread over")
    parser.add_argument("--open-loop", default="",
                        help="player counts (e.g. 150,300,500): after the other phases, players who think --think s "
                             "before each action, as bench_game_api.py --open-loop, on the HTTP processes")
    parser.add_argument("--think", type=float, default=5.0)
    parser.add_argument("--seconds", type=float, default=40.0, help="open loop: measured seconds per level")
    parser.add_argument("--p99-ms", type=float, default=150.0)
    parser.add_argument("--keep-going", action="store_true", help="open loop: every level, even after a miss")
    parser.add_argument("--deadline", type=float, default=600, help="seconds a client waits for its done")
    parser.add_argument("--database-url", default="postgres://postgres@127.0.0.1:5432/postgres",
                        help="a PostgreSQL server (and a database to connect to) where a scratch database is made")
    parser.add_argument("--redis-url", default="", help="use this Redis instead of a private redis-server")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    worker_counts = [int(n) for n in args.workers.split(",") if n.strip()]

    workdir = Path(tempfile.mkdtemp(prefix="geoweb-bench-scaleout-"))
    db_name = f"geoweb_bench_{os.getpid()}"
    redis = None if args.redis_url else RedisServer(workdir=workdir / "redis")
    processes = []
    report: dict = {"machine": machine_description(), "args": vars(args) | {"json": str(args.json)}, "runs": []}
    try:
        if redis:
            redis.start()
        redis_url = args.redis_url or redis.url
        database_url = create_database(args.database_url, db_name)
        secret_key = secrets.token_urlsafe(50)
        data_dir, model_dir = workdir / "data", workdir / "models"
        cookies = prepare_django(database_url=database_url, redis_url=redis_url, data_dir=data_dir,
                                 model_dir=model_dir, secret_key=secret_key, users=args.users, game_images=10)
        env = app_environment(
            database_url=database_url, redis_url=redis_url, data_dir=data_dir, model_dir=model_dir,
            secret_key=secret_key, channel_prefix=f"bench{os.getpid()}", GEOWEB_DEVICE=args.device,
            GEOWEB_LOG_LEVEL="WARNING", GEOWEB_UPLOAD_DAILY_QUOTA="0", GEOWEB_RATE_UPLOAD_IP="1000000",
            GEOWEB_RATE_WEBSOCKET="1000000", GEOWEB_RATE_LOGIN="1000000", GEOWEB_RATE_GAME_START="0",
            GEOWEB_WORKER_POLL_S="0.5", PYTHONPATH=str(REPO))
        if args.device == "cuda":
            env.pop("OMP_NUM_THREADS", None)
        web = []
        application = "benchmarks.asgi_stock:application" if args.http == "stock" else "geoweb.asgi:application"
        for i in range(args.web):
            port = free_port()
            processes.append(start_web(f"web-{i}", port=port, env=env, log_dir=workdir / "logs",
                                       application=application))
            web.append(f"http://127.0.0.1:{port}")
        http = web
        if args.http == "gunicorn":
            port = free_port()
            processes.append(start_web("http", port=port, env=env, log_dir=workdir / "logs", argv=[
                sys.executable, "-m", "gunicorn", "-b", f"127.0.0.1:{port}", "-k", "gthread",
                "-w", str(args.gunicorn_workers), "--threads", str(args.gunicorn_threads), "--keep-alive", "75",
                "--backlog", "4096", "geoweb.wsgi:application"]))
            http = [f"http://127.0.0.1:{port}"]
        print(f"{report['machine']}\nHTTP: {args.http} at {', '.join(http)}; websockets: {args.web} Daphne "
              f"processes at {', '.join(web)}", flush=True)

        workers = []
        for count in worker_counts:
            while len(workers) < count:
                workers.append(start_worker(f"worker-{len(workers)}", env=env, log_dir=workdir / "logs",
                                            args=("--batch", str(args.batch))))
                processes.append(workers[-1])
            while len(workers) > count:
                workers.pop().stop(timeout_s=60)
            warm = run_analysis_phase(clients=2 * count, http=http, ws=web, cookies=cookies, deadline_s=120)
            if warm["done"] != 2 * count:
                raise RuntimeError(f"warm-up failed: {warm['problems']}")
            print(f"\n== {args.clients} analysis clients, {args.web} web processes, {count} worker(s), "
                  f"device {args.device} ==", flush=True)
            run = run_analysis_phase(clients=args.clients, http=http, ws=web, cookies=cookies,
                                     deadline_s=args.deadline)
            run["workers"] = count
            report["runs"].append(run)
            print(f"done {run['done']}/{run['clients']}, lost or mixed-up {run['lost_or_mixed']}, "
                  f"reconnects {run['reconnects']}, wall {run['wall_s']:.1f} s, "
                  f"throughput {run['throughput_per_s']:.1f} analyses/s, mean batch {run['mean_batch']:.1f}")
            print(f"  upload  {fmt_ms(run['upload_s'])}")
            print(f"  done    {fmt_ms(run['done_s'])}  (from upload start to the client holding `done`)")
            for problem in run["problems"]:
                print(f"  PROBLEM {problem}")

        if args.players:
            print(f"\n== {args.players} game players, HTTP: {args.http} ==", flush=True)
            game = asyncio.run(game_load(players=args.players, web=http))
            report["game"] = game
            print(f"requests {game['requests']}, errors {game['errors']}, wall {game['wall_s']:.1f} s, "
                  f"{game['requests_per_s']:.0f} requests/s")
            print(f"  latency {fmt_ms(game['latency_s'])}")
            for sample in game["error_samples"]:
                print(f"  ERROR {sample}")

        if args.open_loop:
            from types import SimpleNamespace

            from benchmarks.bench_game_api import open_loop_level, run_open_loop

            print(f"\n== open loop, HTTP: {args.http}, think {args.think:g} s, {args.seconds:g} s per level, load "
                  f"average before {os.getloadavg()[0]:.1f} ==", flush=True)
            ports = [urllib.parse.urlsplit(url).port for url in http]
            # Unreported warm-up, so that no level pays for cold processes, threads and pooled connections.
            rounds = 5  # GEOWEB_GAME_ROUNDS's default, which the web processes run with
            asyncio.run(open_loop_level(ports, 50, args.think, 10, rounds, seed=99))
            report["open_loop_served"] = run_open_loop(
                ports, SimpleNamespace(players=args.open_loop, think=args.think, seconds=args.seconds, rounds=rounds,
                                       p99_ms=args.p99_ms, keep_going=args.keep_going))
    finally:
        for process in processes:
            process.stop(timeout_s=30)
        try:
            from django.db import connections

            connections.close_all()
        except Exception:  # noqa: BLE001 - Django may not have been set up when setup itself failed
            pass
        try:
            drop_database(args.database_url, db_name)
        except Exception as error:  # noqa: BLE001
            print(f"could not drop {db_name}: {error}", file=sys.stderr)
        if redis:
            redis.stop()
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))
    failed = any(run["lost_or_mixed"] or run["done"] != run["clients"] for run in report["runs"]) or (
        report.get("game", {}).get("errors", 0) > 0)
    return 1 if failed else 0


def machine_description() -> str:
    import platform

    try:
        import torch

        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    except Exception:  # noqa: BLE001
        gpu = "torch unavailable"
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (f"{os.cpu_count()}-core CPU ({platform.machine()}), {gpu}, Python {platform.python_version()}; "
            f"load average at start {load}")


if __name__ == "__main__":
    sys.exit(main())

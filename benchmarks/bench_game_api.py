"""Throughput and latency of the play-mode JSON API against a plain Django hello-world on the same server.

Starts Daphne on the embedded defaults (SQLite, in-memory channel layer) with a throwaway data directory holding
generated game images imported through `manage.py import_im2gps`, then drives it over loopback with a bounded
asyncio load generator (N concurrent keep-alive clients, each an anonymous player with its own cookies):

  hello   GET  /bench/hello/                  plain Django view, same middleware: the baseline
  start   POST /api/games/                    a new 5-round game (seeded draw, 6 rows written)
  guess   POST /api/games/<key>/guess/        store and score a guess, return the reveal
  reveal  GET  /api/games/<key>/              the game state with the guessed rounds revealed

Each endpoint runs in its own timed phase. Before the guess phase every round of the started games is marked as
shown, so consecutive guesses need no `next` call in between (this isolates the cost of the guess itself).

    .venv/bin/python benchmarks/bench_game_api.py --clients 50 --seconds 15

Open loop (--open-loop): what players feel rather than saturation. Each simulated player plays whole games as a
browser does (start, then per round: next, the photo, a guess; the summary at the end), pausing a random think time
(exponential, mean --think seconds) before each action, and waits for each answer before thinking again. For each
number of players in --players the run reports p50/p99 per endpoint over --seconds after a ramp-in, and the
largest number of players served with p99 <= --p99-ms on every endpoint:

    .venv/bin/python benchmarks/bench_game_api.py --open-loop --players 100,250,500,1000 --think 5 --seconds 40

Setups (issue 15 §5), measured back to back with the same arguments:
  --server daphne --handler pooled   the embedded default (geoweb/http_handler.py)
  --server daphne --handler stock    Django's stock ASGI handler (benchmarks/asgi_stock.py), CONN_MAX_AGE=0
  --server gunicorn                  WSGI (geoweb/wsgi.py) under gunicorn's gthread workers; in that deployment Daphne
                                     serves only /ws/, which this benchmark does not use (pip install gunicorn)
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable


# --- a minimal HTTP/1.1 keep-alive client (no dependency; cheap enough not to starve a 2-core server) ----------

class HttpClient:
    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.cookies: dict[str, str] = {}
        self.reader = self.writer = None

    async def _connect(self):
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def request(self, method: str, path: str, body: dict | None = None) -> tuple[int, bytes]:
        payload = json.dumps(body).encode() if body is not None else b""
        headers = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}", "Connection: keep-alive",
                   "Accept: application/json"]
        if self.cookies:
            headers.append("Cookie: " + "; ".join(f"{k}={v}" for k, v in self.cookies.items()))
        if method == "POST":
            headers += ["Content-Type: application/json", f"Content-Length: {len(payload)}",
                        f"X-CSRFToken: {self.cookies.get('csrftoken', '')}"]
        data = ("\r\n".join(headers) + "\r\n\r\n").encode() + payload
        for attempt in (0, 1):
            try:
                if self.writer is None:
                    await self._connect()
                self.writer.write(data)
                await self.writer.drain()
                return await self._response()
            except (ConnectionError, asyncio.IncompleteReadError):
                self.writer = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    async def _response(self) -> tuple[int, bytes]:
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        length, chunked, close = None, False, False
        for line in lines[1:]:
            if ":" not in line:
                continue
            name, value = line.split(":", 1)
            name, value = name.strip().lower(), value.strip()
            if name == "content-length":
                length = int(value)
            elif name == "transfer-encoding" and "chunked" in value.lower():
                chunked = True
            elif name == "connection" and value.lower() == "close":
                close = True
            elif name == "set-cookie":
                key, _, rest = value.partition("=")
                self.cookies[key.strip()] = rest.split(";", 1)[0]
        if chunked:
            body = b""
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                body += await self.reader.readexactly(size + 2)
                if size == 0:
                    break
        else:
            body = await self.reader.readexactly(length or 0)
        if close:
            self.writer.close()
            self.writer = None
        return status, body

    async def close(self):
        if self.writer is not None:
            self.writer.close()


# --- the run --------------------------------------------------------------------------------------------------

class Phase:
    def __init__(self, name: str):
        self.name, self.latencies, self.errors, self.elapsed = name, [], 0, 0.0

    def row(self) -> str:
        n = len(self.latencies)
        if not n:
            return f"{self.name:<7} no requests"
        ordered = sorted(self.latencies)
        p50 = ordered[n // 2] * 1000
        p99 = ordered[min(n - 1, int(n * 0.99))] * 1000
        return (f"{self.name:<7} {n / self.elapsed:>9.1f} req/s  p50 {p50:>7.1f} ms  p99 {p99:>7.1f} ms  "
                f"({n} requests, {self.errors} errors)")

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.elapsed if self.elapsed else 0.0


async def run_phase(name, clients, seconds, make_request) -> Phase:
    """Every client sends `make_request(i)` back to back until the time is up or it runs out of work."""
    phase = Phase(name)
    deadline = time.perf_counter() + seconds

    async def worker(i):
        while time.perf_counter() < deadline:
            request = make_request(i)
            if request is None:
                return
            method, path, body = request
            t0 = time.perf_counter()
            status, content = await clients[i].request(method, path, body)
            phase.latencies.append(time.perf_counter() - t0)
            if status >= 400:
                phase.errors += 1
                if phase.errors == 1:
                    print(f"  first error in {name}: {status} {content[:200]!r}", file=sys.stderr)

    start = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(len(clients))))
    phase.elapsed = time.perf_counter() - start
    return phase


def prepare_data(data_dir: Path, images: int, env: dict) -> None:
    """Migrate a fresh database and import generated photos with a model's guesses through import_im2gps."""
    from PIL import Image, ImageDraw

    subprocess.run([PYTHON, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True)
    source = data_dir / "import"
    (source / "images").mkdir(parents=True)
    meta = ["IMG_ID,AUTHOR,LAT,LON,S3_Label,S16_Label,S365_Label,Prob_indoor,Prob_natural,Prob_urban"]
    scene = ["img_id,gt_lat,predicted_lat,gt_long,predicted_long,great_circle_distance,url,available,author,"
             "license_id,license_name,license_url"]
    predictions = ["img_id,gt_lat,predicted_lat,gt_long,predicted_long,great_circle_distance"]
    for i in range(images):
        img_id = f"{100000 + i}_{i:08x}_{i % 97}_{i}@N00.jpg"
        lat, lon = -60 + (i * 37) % 120, -180 + (i * 71) % 360
        image = Image.new("RGB", (640, 480), ((i * 40) % 255, 120, 200))
        ImageDraw.Draw(image).ellipse([100, 100, 300 + i % 200, 300], fill=(30, 30, 30))
        image.save(source / "images" / img_id, quality=85)
        meta.append(f"{img_id},bench,{lat},{lon},1,1,1,0.2,0.5,0.3")
        scene.append(f"{img_id},{lat},{lat + 1},{lon},{lon + 1},150.0,,1,author{i},4,CC-BY 2.0,"
                     "https://creativecommons.org/licenses/by/2.0/")
        predictions.append(f"{img_id},{lat},{lat + 1},{lon},{lon + 1},150.0")
    for name, lines in (("meta.csv", meta), ("scene.csv", scene), ("predictions.csv", predictions)):
        (source / name).write_text("\n".join(lines) + "\n")
    subprocess.run([PYTHON, "manage.py", "import_im2gps", "--meta", str(source / "meta.csv"), "--images",
                    str(source / "images"), "--attribution", str(source / "scene.csv"), "--predictions",
                    str(source / "predictions.csv")], cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("the server did not start")


def wait_until_serving(port: int, timeout: float = 180) -> None:
    """Until the home page answers 200: a server may bind its port long before its workers have loaded Django."""
    async def probe() -> int:
        client = HttpClient("127.0.0.1", port)
        try:
            return (await asyncio.wait_for(client.request("GET", "/"), 30))[0]
        finally:
            await client.close()

    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if asyncio.run(probe()) == 200:
                return
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError):
            pass
        time.sleep(0.5)
    raise RuntimeError("the server did not answer the home page")


def mark_rounds_shown(env: dict) -> None:
    # Done by the ORM outside the server: lets the guess phase send guesses back to back without `next`.
    code = ("import django; django.setup(); from django.utils import timezone; from games.models import Round; "
            "print(Round.objects.filter(started_at__isnull=True).update(started_at=timezone.now()))")
    subprocess.run([PYTHON, "-c", code], cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)


async def drive(port: int, args, env: dict) -> list[Phase]:
    clients = [HttpClient("127.0.0.1", port) for _ in range(args.clients)]
    for client in clients:  # a session and a CSRF cookie per client, as the browser gets from the home page
        status, _ = await client.request("GET", "/")
        assert status == 200, status
    phases = [await run_phase("warmup", clients, 2, lambda i: ("GET", "/bench/hello/", None))]
    phases.append(await run_phase("hello", clients, args.seconds, lambda i: ("GET", "/bench/hello/", None)))

    games: list[list[str]] = [[] for _ in clients]
    starts = Phase("start")

    async def starter(i, deadline):
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            status, body = await clients[i].request("POST", "/api/games/", {})
            starts.latencies.append(time.perf_counter() - t0)
            if status != 201:
                starts.errors += 1
                if starts.errors == 1:
                    print(f"  first error in start: {status} {body[:200]!r}", file=sys.stderr)
                continue
            games[i].append(json.loads(body)["key"])

    t_start = time.perf_counter()
    await asyncio.gather(*(starter(i, t_start + args.seconds) for i in range(len(clients))))
    starts.elapsed = time.perf_counter() - t_start
    phases.append(starts)

    await asyncio.to_thread(mark_rounds_shown, env)
    work = [[(key, r) for key in keys for r in range(5)] for keys in games]
    cursor = [0] * len(clients)

    def next_guess(i):
        if cursor[i] >= len(work[i]):
            return None
        key, index = work[i][cursor[i]]
        cursor[i] += 1
        return "POST", f"/api/games/{key}/guess/", {"round": index, "lat": 10.0 + index, "lon": 20.0}

    phases.append(await run_phase("guess", clients, args.seconds, next_guess))
    reveal_cursor = [0] * len(clients)

    def next_state(i):
        keys = games[i]
        if not keys:
            return None
        reveal_cursor[i] += 1
        return "GET", f"/api/games/{keys[reveal_cursor[i] % len(keys)]}/", None

    phases.append(await run_phase("reveal", clients, args.seconds, next_state))
    for client in clients:
        await client.close()
    return phases[1:]


# --- open loop: players with think time ----------------------------------------------------------------------------

OPEN_LOOP_ENDPOINTS = ("start", "next", "photo", "guess", "summary")


async def open_loop_level(port: int | list[int], players: int, think_s: float, seconds: float, rounds: int,
                          seed: int) -> dict[str, Phase]:
    """`players` players for a ramp-in of 2 think times plus `seconds` measured; latencies of requests sent in the
    measured window, per endpoint. With several ports (web processes), player i plays on port i mod N."""
    ports = port if isinstance(port, list) else [port]
    rng = random.Random(seed)
    phases = {name: Phase(name) for name in OPEN_LOOP_ENDPOINTS}
    ramp_s = 2 * think_s
    t0 = time.perf_counter()
    measure_from, stop_at = t0 + ramp_s, t0 + ramp_s + seconds

    async def timed(name, client, method, path, body=None):
        sent = time.perf_counter()
        status, content = await client.request(method, path, body)
        if measure_from <= sent < stop_at:
            phases[name].latencies.append(time.perf_counter() - sent)
            if status >= 400:
                phases[name].errors += 1
                if phases[name].errors == 1:
                    print(f"  first error in {name}: {status} {content[:200]!r}", file=sys.stderr)
        return status, content

    async def think():
        await asyncio.sleep(rng.expovariate(1.0 / think_s))

    async def player(i):
        client = HttpClient("127.0.0.1", ports[i % len(ports)])
        await asyncio.sleep(rng.uniform(0, ramp_s))  # players arrive over the ramp-in, not all at once
        try:
            status, _ = await client.request("GET", "/")
            assert status == 200, status
            while time.perf_counter() < stop_at:
                await think()
                status, body = await timed("start", client, "POST", "/api/games/", {})
                if status != 201:
                    continue
                key = json.loads(body)["key"]
                for index in range(rounds):
                    await think()
                    status, body = await timed("next", client, "POST", f"/api/games/{key}/next/", {})
                    if status != 200:
                        break
                    await timed("photo", client, "GET", json.loads(body)["round"]["photo_url"])
                    await think()
                    await timed("guess", client, "POST", f"/api/games/{key}/guess/",
                                {"round": index, "lat": rng.uniform(-60, 60), "lon": rng.uniform(-180, 180)})
                    if time.perf_counter() >= stop_at:
                        return
                await think()
                await timed("summary", client, "GET", f"/api/games/{key}/summary/")
        finally:
            await client.close()

    await asyncio.gather(*(player(i) for i in range(players)))
    for phase in phases.values():
        phase.elapsed = seconds
    return phases


def p99_ms(phase: Phase) -> float:
    ordered = sorted(phase.latencies)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000 if ordered else float("nan")


def run_open_loop(port: int | list[int], args) -> int:
    """Each level of args.players in turn (until one is not served, unless args.keep_going); returns the most
    players served."""
    served = 0
    for level, players in enumerate(int(n) for n in args.players.split(",")):
        phases = asyncio.run(open_loop_level(port, players, args.think, args.seconds, args.rounds, seed=level))
        worst = max((p99_ms(p) for p in phases.values() if p.latencies), default=float("inf"))
        errors = sum(p.errors for p in phases.values())
        ok = worst <= args.p99_ms and errors == 0
        served = players if ok else served
        total = sum(len(p.latencies) for p in phases.values())
        print(f"{players:>5} players: {total / args.seconds:7.1f} req/s, worst p99 {worst:8.1f} ms, {errors} errors"
              f"  -> {'served' if ok else 'NOT served'} at p99 <= {args.p99_ms:.0f} ms")
        for phase in phases.values():
            print("    " + phase.row())
        if not ok and not args.keep_going:
            break
    print(f"players served with p99 <= {args.p99_ms:.0f} ms on every endpoint: {served}"
          f"{' (goal 1,000: met)' if served >= 1000 else ' (goal 1,000: MISSED)'}")
    return served


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=15.0, help="length of each timed phase")
    parser.add_argument("--images", type=int, default=60, help="generated game images to import")
    parser.add_argument("--sqlite-plain", action="store_true",
                        help="run SQLite as it comes (rollback journal, deferred transactions), not the defaults")
    parser.add_argument("--keep", action="store_true", help="keep the throwaway data directory")
    parser.add_argument("--server", choices=("daphne", "uvicorn", "gunicorn"), default="daphne",
                        help="server to measure (uvicorn and gunicorn are not project requirements: pip install "
                             "them first)")
    parser.add_argument("--handler", choices=("pooled", "stock"), default="pooled",
                        help="HTTP handler under an ASGI server: geoweb/http_handler.py or Django's stock one")
    parser.add_argument("--gunicorn-workers", type=int, default=2 * (os.cpu_count() or 1) + 1)
    parser.add_argument("--gunicorn-threads", type=int, default=8)
    parser.add_argument("--open-loop", action="store_true", help="players with think time instead of saturation")
    parser.add_argument("--players", default="100,250,500,1000", help="open loop: player counts, in order")
    parser.add_argument("--think", type=float, default=5.0, help="open loop: mean think time before each action (s)")
    parser.add_argument("--rounds", type=int, default=5, help="open loop: rounds per game (settings.GAME_ROUNDS)")
    parser.add_argument("--p99-ms", type=float, default=150.0, help="open loop: latency a player should get")
    parser.add_argument("--keep-going", action="store_true", help="open loop: measure every level even after a miss")
    args = parser.parse_args()

    data_dir = Path(tempfile.mkdtemp(prefix="geoweb-game-bench-"))
    env = dict(os.environ, GEOWEB_DATA_DIR=str(data_dir), DJANGO_SETTINGS_MODULE="benchmarks.game_bench_settings",
               PYTHONPATH=str(ROOT), GEOWEB_EMBEDDED_WORKER="0", GEOWEB_TILE_URL="", GEOWEB_LOG_LEVEL="WARNING")
    if args.sqlite_plain:
        env["GEOWEB_BENCH_SQLITE_PLAIN"] = "1"
    env.pop("DATABASE_URL", None)
    env.pop("REDIS_URL", None)
    if args.handler == "stock" or args.server == "gunicorn":
        env["GEOWEB_DB_CONN_MAX_AGE"] = "0" if args.handler == "stock" and args.server != "gunicorn" else "600"
    application = "benchmarks.asgi_stock:application" if args.handler == "stock" else "geoweb.asgi:application"
    if args.server == "gunicorn":
        env["DJANGO_SETTINGS_MODULE"] = "benchmarks.game_bench_settings"
    server = None
    try:
        prepare_data(data_dir, args.images, env)
        port = free_port()
        if args.server == "daphne":
            command = ["-m", "daphne", "-b", "127.0.0.1", "-p", str(port), application]
        elif args.server == "uvicorn":
            command = ["-m", "uvicorn", "--host", "127.0.0.1", "--port", str(port), "--no-access-log",
                       "--lifespan", "off", application]
        else:
            command = ["-m", "gunicorn", "-b", f"127.0.0.1:{port}", "-k", "gthread",
                       "-w", str(args.gunicorn_workers), "--threads", str(args.gunicorn_threads), "--preload",
                       "--keep-alive", "75", "--backlog", "4096", "geoweb.wsgi:application"]
        server = subprocess.Popen([PYTHON, *command], cwd=ROOT, env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_for_port(port)
        wait_until_serving(port)
        setup = (f"{args.server}" + ("" if args.server == "gunicorn" else f" ({args.handler} handler)")
                 + (f", {args.gunicorn_workers} workers x {args.gunicorn_threads} threads"
                    if args.server == "gunicorn" else ""))
        if args.open_loop:
            print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; {setup}, "
                  f"SQLite (WAL, IMMEDIATE); open loop, think {args.think:.0f} s, {args.seconds:.0f} s per level; "
                  f"load average before: {os.getloadavg()[0]:.1f}")
            run_open_loop(port, args)
            return
        phases = asyncio.run(drive(port, args, env))
    finally:
        if server is not None:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(timeout=10)
        if not args.keep:
            shutil.rmtree(data_dir, ignore_errors=True)
    hello = phases[0].rate
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
          f"{setup}, SQLite{' (plain: rollback journal, deferred)' if args.sqlite_plain else ' (WAL, IMMEDIATE)'}, {args.clients} concurrent clients, {args.seconds:.0f} s per phase")
    for phase in phases:
        ratio = f"  = {phase.rate / hello * 100:5.1f}% of hello" if phase.name != "hello" and hello else ""
        print(phase.row() + ratio)
    guess = next(p for p in phases if p.name == "guess")
    p99 = sorted(guess.latencies)[min(len(guess.latencies) - 1, int(len(guess.latencies) * 0.99))] * 1000
    print(f"targets: guess >= 30% of hello: {'met' if guess.rate >= 0.3 * hello else 'MISSED'} "
          f"({guess.rate / hello * 100:.1f}%); guess p99 <= 50 ms: {'met' if p99 <= 50 else 'MISSED'} ({p99:.1f} ms)")


if __name__ == "__main__":
    main()

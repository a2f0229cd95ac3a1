"""Real processes for the scale-out fault tests and load benchmarks: Daphne web processes, `run_worker` processes,
a private Redis server the test may restart, and a TCP proxy in front of PostgreSQL that the test may cut.

Nothing here touches the machine's shared Redis or PostgreSQL servers beyond ordinary connections: faults are made
on the test's own Redis (its own port) and on the proxy, never by stopping a shared service.
"""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
DAPHNE = str(Path(PYTHON).with_name("daphne"))


def scaleout_services_configured() -> bool:
    """True when the run points at PostgreSQL and Redis, as `.ci/run`'s second pass does."""
    return os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://")) and bool(
        os.environ.get("REDIS_URL"))


SKIP_REASON = ("scale-out test: needs DATABASE_URL=postgres://... and REDIS_URL=redis://... "
               "(`.ci/run` runs the suite a second time with both set)")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(condition, *, timeout_s: float, interval_s: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(interval_s)


def database_url_of(settings_dict: dict, *, host: str | None = None, port: int | None = None) -> str:
    """A DATABASE_URL for the database Django is using now (the pytest-django test database in tests)."""
    user = settings_dict.get("USER") or "postgres"
    password = f":{settings_dict['PASSWORD']}" if settings_dict.get("PASSWORD") else ""
    return (f"postgres://{user}{password}@{host or settings_dict.get('HOST') or '127.0.0.1'}:"
            f"{port or settings_dict.get('PORT') or 5432}/{settings_dict['NAME']}")


# --- a TCP proxy the test can cut --------------------------------------------------------------------------------

class TcpProxy:
    """Forwards 127.0.0.1:<port> to a target. `cut()` resets every connection and refuses new ones; `restore()`
    listens again on the same port. Runs its own event loop in a background thread."""

    def __init__(self, *, target_host: str, target_port: int, port: int = 0):
        self.target = (target_host, int(target_port))
        self.port = port or free_port()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"tcp-proxy-{self.port}", daemon=True)
        self._server: asyncio.AbstractServer | None = None
        self._transports: set[asyncio.BaseTransport] = set()
        self.connections_made = 0

    def __enter__(self) -> "TcpProxy":
        self._thread.start()
        self.restore()
        return self

    def __exit__(self, *exc):
        self.close()

    def _call(self, coroutine, timeout_s: float = 10):
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout_s)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.transport.abort()

    async def _handle(self, client_reader, client_writer):
        self.connections_made += 1
        try:
            server_reader, server_writer = await asyncio.open_connection(*self.target)
        except OSError:
            client_writer.transport.abort()
            return
        pair = {client_writer.transport, server_writer.transport}
        self._transports |= pair
        try:
            await asyncio.gather(self._pipe(client_reader, server_writer), self._pipe(server_reader, client_writer))
        finally:
            self._transports -= pair

    async def _listen(self):
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port, reuse_address=True)

    async def _cut(self):
        if self._server is not None:
            self._server.close()
            self._server = None
        for transport in list(self._transports):
            transport.abort()
        self._transports.clear()

    def restore(self):
        if self._server is None:
            self._call(self._listen())

    def cut(self):
        self._call(self._cut())

    def close(self):
        if self._thread.is_alive():
            self._call(self._cut())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)


# --- a private Redis server --------------------------------------------------------------------------------------

def redis_ping(port: int, *, timeout_s: float = 0.5) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """A redis-server of the test's own on a spare port, keeping nothing on disk; restartable on the same port."""

    def __init__(self, *, workdir: Path, port: int = 0):
        self.port = port or free_port()
        self.workdir = Path(workdir)
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self):
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir), "--logfile", str(self.workdir / f"redis-{self.port}.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: redis_ping(self.port), timeout_s=10, what=f"redis-server on port {self.port}")

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None

    def restart(self):
        self.stop()
        self.start()

    def __enter__(self) -> "RedisServer":
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()


# --- the app's own processes -------------------------------------------------------------------------------------

def app_environment(*, database_url: str, redis_url: str, data_dir: Path, model_dir: Path, secret_key: str,
                    channel_prefix: str, **extra: str) -> dict[str, str]:
    """Environment for a Daphne or worker process of the scale-out layout (no embedded worker, CPU)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("GEOWEB_", "PYTEST"))}
    env.update({
        "DJANGO_SETTINGS_MODULE": "geoweb.settings",
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "GEOWEB_DATA_DIR": str(data_dir),
        "GEOWEB_MODEL_DIR": str(model_dir),
        "GEOWEB_SECRET_KEY": secret_key,
        "GEOWEB_CHANNEL_PREFIX": channel_prefix,
        "GEOWEB_EMBEDDED_WORKER": "0",
        "GEOWEB_DEVICE": "cpu",
        "GEOWEB_TILE_URL": "",
        "GEOWEB_LOG_LEVEL": "INFO",
        "PYTHONUNBUFFERED": "1",
        # One core each: the machine under test has two, shared by every process of the test.
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    })
    env.update(extra)
    return env


class AppProcess:
    """One process of the app (Daphne or `run_worker`), its output kept in a log file for the failure message."""

    def __init__(self, name: str, argv: list[str], *, env: dict[str, str], log_dir: Path):
        self.name = name
        self.argv = argv
        self.env = env
        self.log_path = Path(log_dir) / f"{name}.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> "AppProcess":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(self.argv, cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        log.close()
        return self

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return ""

    def kill(self):
        """SIGKILL: no cleanup, as when a machine dies or the kernel's OOM killer strikes."""
        if self.alive():
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self, *, timeout_s: float = 20) -> int | None:
        """SIGTERM and wait; SIGKILL if it does not exit in time. Returns the exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        return self.process.returncode


def http_status(url: str, *, timeout_s: float = 5) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return None


def start_web(name: str, *, port: int, env: dict[str, str], log_dir: Path, timeout_s: float = 60,
              application: str = "geoweb.asgi:application", argv: list[str] | None = None) -> AppProcess:
    """A web process (Daphne serving `application`, or the command `argv`), started and answering /healthz."""
    argv = argv or [DAPHNE, "-b", "127.0.0.1", "-p", str(port), application]
    process = AppProcess(name, argv, env=env, log_dir=log_dir).start()
    try:
        wait_until(lambda: not process.alive() or http_status(f"http://127.0.0.1:{port}/healthz") == 200,
                   timeout_s=timeout_s, interval_s=0.2, what=f"{name} to answer /healthz")
    except TimeoutError:
        process.stop()
        raise RuntimeError(f"{name} did not become healthy:\n{process.log_tail()}") from None
    if not process.alive():
        raise RuntimeError(f"{name} exited at start:\n{process.log_tail()}")
    return process


def start_worker(name: str, *, env: dict[str, str], log_dir: Path, args: tuple[str, ...] = ()) -> AppProcess:
    return AppProcess(name, [PYTHON, "manage.py", "run_worker", *args], env=env, log_dir=log_dir).start()


# --- a websocket client that behaves like the analysis page ------------------------------------------------------

class AnalysisWatch:
    """What one client saw of one analysis: events by seq, when `done` came, how often it had to reconnect."""

    def __init__(self, analysis_id: int):
        self.analysis_id = analysis_id
        self.events: dict[int, dict] = {}
        self.foreign: list[dict] = []  # events naming another analysis: must stay empty
        self.done_at: float | None = None
        self.done_wall: float | None = None  # time.time() of `done`, to compare with the stored finished_at
        self.error: str | None = None
        self.connects = 0
        self.started_at = time.monotonic()

    @property
    def done(self) -> bool:
        return self.done_at is not None

    @property
    def latency_s(self) -> float | None:
        return None if self.done_at is None else self.done_at - self.started_at

    def stage_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for event in self.events.values():
            counts[event["type"]] = counts.get(event["type"], 0) + 1
        return counts


async def watch_analysis(session, *, base_url: str, analysis_id: int, cookie: str, deadline_s: float,
                         watch: AnalysisWatch | None = None, retry_pause_s: float = 0.25) -> AnalysisWatch:
    """Follow ws/analysis/<id>/ until `done` (or a fatal error), reconnecting like the page does when the socket
    closes; each connection starts with the database replay, so nothing stored is missed."""
    import aiohttp

    watch = watch or AnalysisWatch(analysis_id)
    ws_url = base_url.replace("http://", "ws://") + f"/ws/analysis/{analysis_id}/"
    headers = {"Origin": base_url, "Cookie": f"sessionid={cookie}"}
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline and not watch.done and watch.error is None:
        try:
            async with session.ws_connect(ws_url, headers=headers, timeout=aiohttp.ClientWSTimeout(ws_close=5)) as ws:
                watch.connects += 1
                while time.monotonic() < deadline:
                    message = await ws.receive(timeout=max(0.1, deadline - time.monotonic()))
                    if message.type != aiohttp.WSMsgType.TEXT:
                        break
                    event = json.loads(message.data)
                    if event.get("analysis") not in (None, analysis_id):
                        watch.foreign.append(event)
                        continue
                    if event.get("seq"):
                        watch.events[event["seq"]] = event
                    if event["type"] == "done":
                        watch.done_at = time.monotonic()
                        watch.done_wall = time.time()
                        return watch
                    if event["type"] == "error" and event.get("fatal", True):
                        watch.error = event.get("message", "error")
                        return watch
        except (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError, OSError):
            pass
        await asyncio.sleep(retry_pause_s)
    return watch

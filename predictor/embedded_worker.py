"""The embedded inference worker: the worker loop in a child process of the web server, watched by the server.

Parent side (`EmbeddedWorker`, a supervisor thread in the web process): starts `python -m predictor.embedded_worker`,
hands it this process's settings, wakes it when an analysis is created, relays the events it reports into this
process's channel layer (the in-memory layer's groups live here, not in the child), and when the child dies logs how,
gives its jobs (analyses and background jobs) back to the queue at once (or fails those interrupted
WORKER_MAX_ATTEMPTS times) and starts a new one.

Child side (`main`): caps its address space (`worker.apply_memory_limit`), configures Django with the parent's
settings, publishes events through the pipe to the parent and runs `Worker.run_forever` until told to stop, or
until the parent goes away (its end of the pipe closes). The database stays the source of truth: a page that
missed a relayed event gets it from the stored events on its next (re)connect.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import pickle
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

logger = logging.getLogger("predictor.embedded_worker")  # also when run as __main__

REPO = Path(__file__).resolve().parents[1]
# A child that lived this long before dying is restarted at once; quicker deaths back off up to the maximum.
HEALTHY_AFTER_S = 60.0
RESTART_DELAY_S = 1.0
MAX_RESTART_DELAY_S = 30.0


def settings_snapshot() -> bytes:
    """The settings of this process as they are now (environment, and any changes made since), for the child."""
    from django.conf import global_settings, settings

    values = {}
    for name in dir(settings):
        if not name.isupper():
            continue
        value = getattr(settings, name)
        if hasattr(global_settings, name) and getattr(global_settings, name) == value:
            continue  # Django's own default: the child has it too
        try:
            pickle.dumps(value)
        except Exception:  # noqa: BLE001 - a setting that cannot travel is left to the child's defaults
            logger.debug("setting %s is not passed to the embedded worker", name)
            continue
        values[name] = value
    return pickle.dumps(values)


def worker_id_of(*, pid: int, token: str) -> str:
    return f"embedded:{socket.gethostname()}:{pid}:{token}"


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


class EmbeddedWorker:
    """Runs the inference worker in a child process of this one, restarts it when it dies, relays its events."""

    def __init__(self, *, restart_delay_s: float = RESTART_DELAY_S, max_restart_delay_s: float = MAX_RESTART_DELAY_S):
        self.restart_delay_s = restart_delay_s
        self.max_restart_delay_s = max_restart_delay_s
        self.process: subprocess.Popen | None = None
        self.worker_id = ""
        self.restarts = 0
        self.last_exit: str | None = None
        self.ready = False  # the current child has set itself up and runs the loop
        self.limit_note = ""  # what the child did about its address space
        self._stopping = threading.Event()
        self._stdin_lock = threading.Lock()
        self._thread = threading.Thread(target=self._supervise, name="embedded-worker-supervisor", daemon=True)
        self._waker = threading.Thread(target=self._wake_child, name="embedded-worker-waker", daemon=True)

    # --- control ----------------------------------------------------------------------------------------------

    def start(self) -> "EmbeddedWorker":
        self._thread.start()
        self._waker.start()
        return self

    @property
    def running(self) -> bool:
        return self._thread.is_alive() and not self._stopping.is_set()

    @property
    def pid(self) -> int | None:
        process = self.process
        return process.pid if process is not None and process.poll() is None else None

    def status(self) -> dict:
        from django.conf import settings

        pid = self.pid
        return {"mode": "child process", "pid": pid, "alive": pid is not None, "ready": pid is not None and self.ready,
                "restarts": self.restarts, "last_exit": self.last_exit,
                "memory_limit_mb": settings.WORKER_MEMORY_LIMIT_MB, "memory_limit": self.limit_note}

    def stop(self, *, timeout_s: float = 30) -> None:
        """Ask the child to finish the batch in hand and exit; kill it if it has not within `timeout_s`."""
        self._stopping.set()
        self._send(b"stop\n")
        process = self.process
        if process is not None:
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                logger.warning("embedded inference worker (pid %d) did not stop in %.0f s: killed", process.pid,
                               timeout_s)
                process.kill()
                process.wait(timeout=10)
        self._thread.join(timeout=10)

    # --- the supervisor thread ----------------------------------------------------------------------------------

    def _supervise(self) -> None:
        from django.db import close_old_connections

        from predictor import services

        delay = self.restart_delay_s
        while not self._stopping.is_set():
            started = time.monotonic()
            try:
                process, relay = self._spawn()
            except Exception:  # noqa: BLE001 - the server stays up and tries again
                logger.exception("could not start the embedded inference worker; trying again in %.0f s", delay)
                self._stopping.wait(delay)
                delay = min(delay * 2, self.max_restart_delay_s)
                continue
            code = process.wait()
            relay.join(timeout=10)
            if self._stopping.is_set():
                logger.info("embedded inference worker (pid %d) stopped", process.pid)
                break
            lived = time.monotonic() - started
            self.restarts += 1
            self.last_exit = f"pid {process.pid} {describe_exit(code)} after {lived:.0f} s"
            if lived >= HEALTHY_AFTER_S:
                delay = self.restart_delay_s
            logger.error("the embedded inference worker (pid %d) %s after %.0f s; restarting it in %.0f s "
                         "(restart %d)", process.pid, describe_exit(code), lived, delay, self.restarts)
            try:
                services.requeue_jobs_of(worker_id=self.worker_id)
                services.requeue_background_jobs_of(worker_id=self.worker_id)
            except Exception:  # noqa: BLE001 - the heartbeat timeout gives them back later
                logger.exception("could not re-queue the dead worker's analyses and jobs")
            finally:
                close_old_connections()
            self._stopping.wait(delay)
            delay = min(delay * 2, self.max_restart_delay_s)

    def _spawn(self) -> tuple[subprocess.Popen, threading.Thread]:
        token = uuid.uuid4().hex[:6]
        events_read, events_write = os.pipe()
        # Each thread of a glibc process may get its own 64 MB malloc arena; under an address-space cap they would
        # take room the model needs.
        env = {**os.environ, "MALLOC_ARENA_MAX": os.environ.get("MALLOC_ARENA_MAX", "2")}
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", "predictor.embedded_worker", "--worker-token", token,
                 "--events-fd", str(events_write)],
                stdin=subprocess.PIPE, pass_fds=(events_write,), cwd=REPO, env=env)
        except BaseException:
            os.close(events_read)
            raise
        finally:
            os.close(events_write)  # the child holds the only write end: its exit ends the relay
        relay = threading.Thread(target=self._relay, args=(events_read,), name="embedded-worker-relay", daemon=True)
        relay.start()
        self.ready = False
        # The id the child claims jobs under names the child's own pid, like a `run_worker` process's.
        self.worker_id = worker_id_of(pid=process.pid, token=token)
        snapshot = settings_snapshot()
        with self._stdin_lock:
            # The settings go first: no "wake" or "stop" line may reach the child before them.
            try:
                process.stdin.write(struct.pack(">Q", len(snapshot)) + snapshot)
                process.stdin.flush()
            except (BrokenPipeError, OSError):
                pass  # it died at once; the supervisor sees it exit
            self.process = process
        if self._stopping.is_set():
            self._send(b"stop\n")  # stop() came while it was starting
        logger.info("started the embedded inference worker %s (pid %d)", self.worker_id, process.pid)
        return process, relay

    def _send(self, data: bytes) -> None:
        process = self.process
        if process is None or process.stdin is None:
            return
        with self._stdin_lock:
            try:
                process.stdin.write(data)
                process.stdin.flush()
            except (BrokenPipeError, OSError, ValueError):
                pass  # the child is gone; the supervisor notices and restarts it

    def _relay(self, fd: int) -> None:
        """Publish, in this process, each event the child reports (one JSON line per event)."""
        from predictor import events

        with os.fdopen(fd, "rb") as stream:
            for line in stream:
                try:
                    message = json.loads(line)
                    if "ready" in message:  # the child's first line: set up, limit applied
                        self.limit_note, self.ready = str(message["ready"]), True
                        continue
                    events.publish(analysis_id=int(message["analysis"]), event=message["event"])
                except Exception:  # noqa: BLE001 - the page catches up from the database
                    logger.exception("could not relay an event of the embedded worker")

    def _wake_child(self) -> None:
        """Pass on "an analysis was created" from this process (services.analysis_created) to the child."""
        from predictor import services

        while not self._stopping.is_set():
            if services.analysis_created.wait(1.0):
                services.analysis_created.clear()
                self._send(b"wake\n")


# --- the child process -----------------------------------------------------------------------------------------

def _read_exactly(stream, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = stream.read(size - len(data))
        if not chunk:
            raise EOFError("the web process closed the pipe before sending the settings")
        data += chunk
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The embedded inference worker (started by the web server).")
    parser.add_argument("--worker-token", required=True)
    parser.add_argument("--events-fd", type=int, required=True)
    args = parser.parse_args(argv)

    control = sys.stdin.buffer
    size = struct.unpack(">Q", _read_exactly(control, 8))[0]
    values = pickle.loads(_read_exactly(control, size))  # from the parent process only, over its own pipe

    import django
    from django.conf import settings

    settings.configure(**values)
    django.setup()

    from predictor import events, services, worker

    worker_id = worker_id_of(pid=os.getpid(), token=args.worker_token)
    limit = worker.apply_memory_limit()
    logger.info("embedded inference worker %s (child of %d): %s", worker_id, os.getppid(), limit)
    out = os.fdopen(args.events_fd, "wb", buffering=0)
    out_lock = threading.Lock()
    loop = worker.Worker(worker_id=worker_id)

    def send(analysis_id: int, event: dict) -> None:
        line = json.dumps({"analysis": analysis_id, "event": event}, separators=(",", ":")).encode() + b"\n"
        try:
            with out_lock:
                out.write(line)
        except BrokenPipeError:
            # The web process is gone: nobody is listening. The event is stored; finish the batch and stop.
            loop.stop()

    events.relay_to(send)
    try:
        with out_lock:
            out.write(json.dumps({"ready": limit}).encode() + b"\n")
    except BrokenPipeError:
        logger.info("the web process went away before the worker was ready")
        return 0

    def listen() -> None:
        for line in control:
            command = line.strip()
            if command == b"wake":
                services.analysis_created.set()
            elif command == b"stop":
                break
        loop.stop()  # "stop", or the end of the pipe: the web server is gone

    threading.Thread(target=listen, name="embedded-worker-control", daemon=True).start()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: loop.stop())
    loop.run_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())

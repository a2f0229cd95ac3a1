"""The inference worker loop: claim queued analyses in batches, run them, heartbeat, re-queue dead workers' jobs.

The same loop runs standalone (`manage.py run_worker`, one process per GPU in scale-out) or, embedded, in a daemon
thread of the web process (`start_embedded_worker`, the default without Redis).
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid

from django.conf import settings
from django.db import close_old_connections, connection

from predictor import services

logger = logging.getLogger(__name__)


def _release_connections() -> None:
    # A long-lived loop must drop broken or expired connections itself; inside a transaction (a test wrapping the
    # worker in one) there is nothing to drop.
    if not connection.in_atomic_block:
        close_old_connections()


def new_worker_id(kind: str) -> str:
    return f"{kind}:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Heartbeat:
    """While a batch is in hand, a side thread marks its claims alive every third of the timeout."""

    def __init__(self, analyses, *, interval_s: float):
        self.analyses = analyses
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="analysis-heartbeat", daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=self.interval_s + 5)

    def _run(self):
        try:
            while not self._stop.wait(self.interval_s):
                services.heartbeat(analyses=self.analyses)
        except Exception:  # noqa: BLE001 - a missed heartbeat is recovered by the next one or by a re-queue
            logger.exception("heartbeat failed")
        finally:
            close_old_connections()


class Worker:
    def __init__(self, *, worker_id: str, batch: int | None = None, poll_s: float | None = None,
                 wake: threading.Event | None = None):
        self.worker_id = worker_id
        self.batch = batch or settings.WORKER_BATCH
        self.poll_s = settings.WORKER_POLL_S if poll_s is None else poll_s
        self.wake = wake or services.analysis_created
        self.stopping = threading.Event()
        self.timeout_s = settings.WORKER_HEARTBEAT_TIMEOUT_S

    def run_once(self) -> int:
        """Re-queue stale jobs, claim one batch and run it; returns the number of analyses run."""
        _release_connections()
        try:
            services.requeue_stale(timeout_s=self.timeout_s)
            claimed = services.claim_analyses(worker_id=self.worker_id, limit=self.batch)
            if claimed:
                logger.info("worker %s runs %d analyses", self.worker_id, len(claimed))
                with Heartbeat(claimed, interval_s=max(0.5, self.timeout_s / 3)):
                    services.run_analyses(analyses=claimed)
            return len(claimed)
        finally:
            _release_connections()

    def run_forever(self) -> None:
        logger.info("worker %s started (batch %d)", self.worker_id, self.batch)
        while not self.stopping.is_set():
            # Cleared before claiming, so that an analysis created during the batch wakes the next round.
            self.wake.clear()
            try:
                done = self.run_once()
            except Exception:  # noqa: BLE001 - the loop must outlive a database hiccup
                logger.exception("worker %s: batch failed", self.worker_id)
                done = 0
                time.sleep(1)
            if done == 0 and not self.stopping.is_set():
                self.wake.wait(self.poll_s)
        logger.info("worker %s stopped", self.worker_id)

    def stop(self) -> None:
        """Finish the batch in hand, then leave the loop."""
        self.stopping.set()
        self.wake.set()


_embedded_lock = threading.Lock()
_embedded: dict = {"pid": None, "worker": None, "thread": None}


def start_embedded_worker() -> Worker | None:
    """Start the worker thread of this process once (a forked child starts its own), if settings ask for it."""
    if not settings.EMBEDDED_WORKER:
        return None
    with _embedded_lock:
        if _embedded["pid"] == os.getpid() and _embedded["thread"] is not None and _embedded["thread"].is_alive():
            return _embedded["worker"]
        worker = Worker(worker_id=new_worker_id("embedded"))
        thread = threading.Thread(target=worker.run_forever, name="embedded-inference-worker", daemon=True)
        _embedded.update(pid=os.getpid(), worker=worker, thread=thread)
        thread.start()
        return worker


def stop_embedded_worker(timeout_s: float = 30) -> None:
    """Stop this process's embedded worker, if one runs (tests that drive the worker themselves)."""
    with _embedded_lock:
        worker, thread = _embedded["worker"], _embedded["thread"]
        if _embedded["pid"] != os.getpid() or worker is None:
            return
        _embedded.update(pid=None, worker=None, thread=None)
    worker.stop()
    if thread is not None:
        thread.join(timeout=timeout_s)


def with_embedded_worker(application):
    """Wrap the ASGI app so that its first request in a process starts that process's embedded worker.

    Starting on first use rather than at import keeps a process that merely imports the app (a test run, a
    management command) from running jobs, and a forked server gets a thread of its own.
    """
    async def app(scope, receive, send):
        if _embedded["pid"] != os.getpid():
            start_embedded_worker()
        return await application(scope, receive, send)

    return app

"""The inference worker loop: claim queued analyses in batches, run them, heartbeat, re-queue dead workers' jobs;
when no analysis waits, claim and run one background job (a game's guess recompute: predictor/jobs.py) the same way.

The same loop runs standalone (`manage.py run_worker`, one process per GPU in scale-out) or, embedded, in a child
process of the web server (`start_embedded_worker`, the default without Redis; see predictor/embedded_worker.py), so
that a worker that dies or runs out of memory never takes the site down. Both cap their address space
(`apply_memory_limit`).
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import close_old_connections, connection

from predictor import jobs, services

if TYPE_CHECKING:
    from predictor.embedded_worker import EmbeddedWorker

logger = logging.getLogger(__name__)


def _release_connections() -> None:
    # A long-lived loop must drop broken or expired connections itself; inside a transaction (a test wrapping the
    # worker in one) there is nothing to drop.
    if not connection.in_atomic_block:
        close_old_connections()


def new_worker_id(kind: str) -> str:
    return f"{kind}:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Heartbeat:
    """While a batch (or a job) is in hand, a side thread marks its claims alive every third of the timeout."""

    def __init__(self, beat, *, interval_s: float):
        self.beat = beat
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
                self.beat()
        except Exception:  # noqa: BLE001 - a missed heartbeat is recovered by the next one or by a re-queue
            logger.exception("heartbeat failed")
        finally:
            close_old_connections()


class _JobContext:
    """What a running background job may ask of the worker that runs it (predictor.jobs.JobContext)."""

    def __init__(self, worker: "Worker", job):
        self.worker = worker
        self.job = job

    def between_batches(self) -> None:
        # Uploads that arrived meanwhile go first: a person waits on each, nobody on a recompute's next batch.
        while self.worker.takes_analyses and self.worker.run_analyses_once():
            pass
        if not services.still_held(job=self.job):
            raise jobs.JobLost(self.job.pk)


class QueueListener:
    """Wakes a worker in this process when another process queues a job: on PostgreSQL, a thread with a connection
    of its own LISTENs on `services.queue.NOTIFY_CHANNEL` and sets the worker's wake event for each NOTIFY
    (`services.jobs_queued`). If the connection breaks it reconnects, waiting longer each time (up to 30 s);
    meanwhile the worker still polls every WORKER_POLL_S, so nothing is lost, only later."""

    def __init__(self, wake: threading.Event):
        self.wake = wake
        self.listening = threading.Event()  # set while LISTEN is in place (tests wait for it)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="queue-listener", daemon=True)

    @staticmethod
    def available() -> bool:
        return connection.vendor == "postgresql"

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        import psycopg

        from predictor.services.queue import NOTIFY_CHANNEL

        delay = 1.0
        while not self._stop.is_set():
            try:
                with psycopg.connect(**connection.get_connection_params(), autocommit=True) as listener:
                    listener.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    self.listening.set()
                    delay = 1.0
                    self.wake.set()  # whatever was queued while nobody listened is claimed now
                    while not self._stop.is_set():
                        for _ in listener.notifies(timeout=1.0):
                            self.wake.set()
            except Exception as error:  # noqa: BLE001 - the worker polls meanwhile
                self.listening.clear()
                logger.warning("queue listener: %s; listening again in %.0f s", error, delay)
                self._stop.wait(delay)
                delay = min(30.0, 2 * delay)
        self.listening.clear()


class Worker:
    def __init__(self, *, worker_id: str, batch: int | None = None, poll_s: float | None = None,
                 wake: threading.Event | None = None, listen: bool = True):
        self.worker_id = worker_id
        self.batch = batch or settings.WORKER_BATCH
        self.poll_s = settings.WORKER_POLL_S if poll_s is None else poll_s
        self.wake = wake or services.analysis_created
        self.stopping = threading.Event()
        self.timeout_s = settings.WORKER_HEARTBEAT_TIMEOUT_S
        self.takes_analyses = True  # off for a command line that runs only its own job (run_job_here)
        self.listen = listen  # on PostgreSQL, also wake on NOTIFY (QueueListener); off only to measure polling
        self.listener: QueueListener | None = None  # while run_forever runs on PostgreSQL

    @property
    def heartbeat_interval_s(self) -> float:
        return max(0.5, self.timeout_s / 3)

    def run_once(self) -> int:
        """Re-queue stale jobs, claim one batch of analyses and run it, or else one background job; returns the
        number of analyses or jobs run."""
        _release_connections()
        try:
            services.requeue_stale(timeout_s=self.timeout_s)
            services.requeue_stale_jobs(timeout_s=self.timeout_s)
            return self.run_analyses_once() or self.run_job_once()
        finally:
            _release_connections()

    def run_analyses_once(self) -> int:
        claimed = services.claim_analyses(worker_id=self.worker_id, limit=self.batch)
        if claimed:
            logger.info("worker %s runs %d analyses", self.worker_id, len(claimed))
            with Heartbeat(lambda: services.heartbeat(analyses=claimed), interval_s=self.heartbeat_interval_s):
                services.run_analyses(analyses=claimed)
        return len(claimed)

    def run_job_once(self, *, job_id: int | None = None) -> int:
        job = services.claim_job(worker_id=self.worker_id, job_id=job_id)
        if job is None:
            return 0
        logger.info("worker %s runs job %s (%s, attempt %d)", self.worker_id, job.pk, job.kind, job.attempts)
        with Heartbeat(lambda: services.heartbeat_jobs(jobs_held=[job]), interval_s=self.heartbeat_interval_s):
            services.run_job(job=job, context=_JobContext(self, job))
        return 1

    def run_forever(self) -> None:
        logger.info("worker %s started (batch %d)", self.worker_id, self.batch)
        if self.listen and QueueListener.available():
            self.listener = QueueListener(self.wake)
            with self.listener:
                self._loop()
        else:
            self._loop()
        logger.info("worker %s stopped", self.worker_id)

    def _loop(self) -> None:
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

    def stop(self) -> None:
        """Finish the batch in hand, then leave the loop."""
        self.stopping.set()
        self.wake.set()


def run_job_here(*, job_id: int, poll_s: float = 0.5, timeout_s: float | None = None) -> bool:
    """Run the background job `job_id` in this (command-line) process as a worker would, or wait while another
    worker runs it; returns whether it has ended. For management commands that queue a job and report its outcome;
    never called in a web process."""
    from predictor.models import Job

    loop = Worker(worker_id=new_worker_id("command"))
    loop.takes_analyses = False  # people's uploads are for the site's workers, whose events reach their pages
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        _release_connections()
        services.requeue_stale_jobs(timeout_s=loop.timeout_s)
        loop.run_job_once(job_id=job_id)
        job = Job.objects.filter(pk=job_id).first()
        if job is None or job.is_finished:
            return True
        if deadline is not None and time.monotonic() >= deadline:
            return False
        time.sleep(poll_s)


def apply_memory_limit(*, limit_mb: int | None = None) -> str:
    """Cap this process's address space at settings.WORKER_MEMORY_LIMIT_MB (RLIMIT_AS) and make it the kernel's
    first choice when memory runs out; returns what was done, for the log.

    Under the cap an allocation that would exceed it fails as an exception (torch: "can't allocate memory"), which
    fails the batch in hand (retried photo by photo), instead of the kernel killing a process. A CUDA worker is not
    capped: the CUDA driver reserves virtual address space far beyond the machine's memory and cannot start under
    such a limit.
    """
    import resource

    limit_mb = settings.WORKER_MEMORY_LIMIT_MB if limit_mb is None else limit_mb
    try:
        with open("/proc/self/oom_score_adj", "w") as handle:
            handle.write("500\n")  # raising one's own score needs no privilege
    except OSError:
        pass
    if limit_mb <= 0:
        return "no address-space limit (WORKER_MEMORY_LIMIT_MB is 0)"
    from predictor.inference import inference_device

    device = inference_device()
    if device.startswith("cuda"):
        return f"no address-space limit on {device} (CUDA reserves more address space than any useful cap)"
    limit = int(limit_mb) * 2**20
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    return f"address space limited to {limit // 2**20} MB"


# The embedded worker of this process: a supervisor (predictor.embedded_worker.EmbeddedWorker) that runs the loop
# above in a child process. A forked server process starts its own.
_embedded_lock = threading.Lock()
_embedded: dict = {"pid": None, "worker": None}


def start_embedded_worker() -> EmbeddedWorker | None:
    """Start this process's embedded worker once, if settings ask for it; returns its supervisor (or None)."""
    if not settings.EMBEDDED_WORKER:
        return None
    from predictor.embedded_worker import EmbeddedWorker

    with _embedded_lock:
        current = _embedded["worker"]
        if _embedded["pid"] == os.getpid() and current is not None and current.running:
            return current
        supervisor = EmbeddedWorker()
        _embedded.update(pid=os.getpid(), worker=supervisor)
        supervisor.start()
        return supervisor


def stop_embedded_worker(timeout_s: float = 30) -> None:
    """Stop this process's embedded worker, if one runs (tests that drive the worker themselves)."""
    with _embedded_lock:
        supervisor = _embedded["worker"]
        if _embedded["pid"] != os.getpid() or supervisor is None:
            return
        _embedded.update(pid=None, worker=None)
    supervisor.stop(timeout_s=timeout_s)


def embedded_status() -> dict | None:
    """The embedded worker of this process as /healthz shows it to staff (pid, alive, restarts, last exit)."""
    supervisor = _embedded["worker"] if _embedded["pid"] == os.getpid() else None
    return supervisor.status() if supervisor is not None else None


def with_embedded_worker(application):
    """Wrap the ASGI app so that its first request in a process starts that process's embedded worker.

    Starting on first use rather than at import keeps a process that merely imports the app (a test run, a
    management command) from running jobs, and a forked server gets a worker of its own.
    """
    async def app(scope, receive, send):
        if _embedded["pid"] != os.getpid():
            start_embedded_worker()
        return await application(scope, receive, send)

    return app

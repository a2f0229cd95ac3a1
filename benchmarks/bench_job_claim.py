"""The job queue's claim cost and pickup latency: GeoWeb's hand-written claim (a batch per claim, woken at once)
against one task per claim, polled (the way django-tasks-db's `db_worker` works), on the configured database.

    .venv/bin/python benchmarks/bench_job_claim.py                       # SQLite (a temporary file)
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/jobspg .venv/bin/python benchmarks/bench_job_claim.py
    # with django-tasks-db's own claim and worker loop (a throwaway venv that has django-tasks-db installed):
    /tmp/jobsvenv/bin/python benchmarks/bench_job_claim.py --django-tasks-db

Prints, per way of claiming: claims per second, ms per claim call, µs per job claimed; and the pickup latency
(enqueue committed -> a waiting worker holds the job), p50 / max over --pickups single jobs.
Claim only: nothing is run through a model.
"""
from __future__ import annotations

import argparse
import logging
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def setup(with_tasks_db: bool) -> None:
    os.environ.setdefault("GEOWEB_DATA_DIR", tempfile.mkdtemp(prefix="bench-claim-"))
    os.environ["DJANGO_SETTINGS_MODULE"] = "geoweb.settings"
    os.environ.setdefault("GEOWEB_EMBEDDED_WORKER", "0")
    from geoweb import settings as project

    if with_tasks_db:
        project.INSTALLED_APPS = [*project.INSTALLED_APPS, "django_tasks", "django_tasks_db"]
        project.TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)


def timed(claim, *, jobs: int) -> tuple[int, list[float]]:
    calls, claimed = [], 0
    while True:
        start = time.perf_counter()
        got = claim()
        calls.append(time.perf_counter() - start)
        if not got:
            return claimed, calls[:-1]
        claimed += got


def report(name: str, claimed: int, calls: list[float]) -> None:
    total = sum(calls)
    print(f"{name:44s} {claimed:5d} jobs  {len(calls):5d} claims  {len(calls) / total:8.0f} claims/s  "
          f"{1000 * statistics.mean(calls):6.2f} ms/claim  {1e6 * total / claimed:7.0f} µs/job")


def queue_analyses(count: int) -> None:
    from django.contrib.auth import get_user_model

    from predictor.models import Analysis

    user, _ = get_user_model().objects.get_or_create(username="bench-claim")
    Analysis.objects.filter(owner=user).delete()
    Analysis.objects.bulk_create([Analysis(owner=user, original_sha256="0" * 64) for _ in range(count)])


def geoweb_claims(jobs: int, batch: int) -> None:
    from predictor import services

    for limit in (batch, 1):
        queue_analyses(jobs)
        claimed, calls = timed(lambda: len(services.claim_analyses(worker_id="bench", limit=limit)), jobs=jobs)
        report(f"geoweb claim_analyses(limit={limit})", claimed, calls)


def geoweb_pickup(count: int, *, wake: str) -> list[float]:
    """A real Worker loop waits (WORKER_POLL_S) on its wake event; analyses are created one at a time.
    `wake`: "event", the creation sets the shared event (the web process and its embedded worker); "notify", the
    creation sends PostgreSQL's NOTIFY, which the worker's listener hears (a `run_worker` process elsewhere); "poll",
    nothing wakes the worker (a `run_worker` process without a listener: SQLite, or before the listener)."""
    from django.contrib.auth import get_user_model
    from django.db import connection

    from predictor import services, worker
    from predictor.models import Analysis
    from predictor.services.queue import NOTIFY_CHANNEL

    held: dict[int, float] = {}
    real = services.run_analyses

    def record(*, analyses):
        for analysis in analyses:
            held[analysis.pk] = time.perf_counter()
        Analysis.objects.filter(pk__in=[a.pk for a in analyses]).update(status="done")

    services.run_analyses = record
    # Only "event" shares this process's event; the others get one of their own, as another process would have.
    loop = worker.Worker(worker_id="bench-pickup", wake=None if wake == "event" else threading.Event(),
                         listen=wake != "poll")
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    if wake == "notify":
        while not (loop.listener and loop.listener.listening.wait(0.1)):
            pass
    user = get_user_model().objects.get(username="bench-claim")
    Analysis.objects.filter(owner=user).delete()
    latencies = []
    try:
        for _ in range(count):
            time.sleep(random.uniform(0.1, 1.5))  # the worker is idle, waiting (any phase of its poll)
            start = time.perf_counter()
            analysis = Analysis.objects.create(owner=user, original_sha256="0" * 64)
            if wake == "event":
                services.analysis_created.set()  # what create_analysis does once the transaction commits
            elif wake == "notify":
                with connection.cursor() as cursor:  # what create_analysis sends on PostgreSQL
                    cursor.execute(f"NOTIFY {NOTIFY_CHANNEL}")
            while analysis.pk not in held:
                time.sleep(0.0005)
            latencies.append(held[analysis.pk] - start)
    finally:
        loop.stop()
        thread.join(10)
        services.run_analyses = real
    return latencies


def tasks_db_claims(jobs: int) -> None:
    from django_tasks_db.models import DBTaskResult
    from django_tasks_db.utils import exclusive_transaction

    DBTaskResult.objects.all().delete()
    for _ in range(jobs):
        noop.enqueue()  # the Task that main() put in place of the function

    def claim() -> int:
        ready = DBTaskResult.objects.ready().filter(backend_name="default")
        with exclusive_transaction(ready.db):  # as db_worker's loop does
            task = ready.get_locked()
            if task is None:
                return 0
            task.claim("bench")
            return 1

    claimed, calls = timed(claim, jobs=jobs)
    report("django-tasks-db get_locked()+claim()", claimed, calls)


def tasks_db_pickup(count: int) -> list[float]:
    """django-tasks-db's own worker loop (interval 1 s, its default), tasks enqueued one at a time."""
    from django_tasks_db.management.commands.db_worker import Worker
    from django_tasks_db.models import DBTaskResult

    DBTaskResult.objects.all().delete()
    loop = Worker(queue_names=["default"], interval=1.0, batch=False, backend_name="default", startup_delay=False,
                  max_tasks=None, worker_id="bench-pickup", excluded_queue_names=[])
    thread = threading.Thread(target=loop.run, daemon=True)
    thread.start()
    latencies = []
    try:
        for _ in range(count):
            time.sleep(random.uniform(0.1, 1.5))
            start = time.perf_counter()
            result = noop.enqueue()
            while not DBTaskResult.objects.filter(pk=result.id).exclude(status="READY").exists():
                time.sleep(0.0005)
            latencies.append(time.perf_counter() - start)
    finally:
        loop.running = False
        thread.join(5)
    return latencies


def noop():
    return None


def pickup_line(name: str, latencies: list[float]) -> None:
    ms = sorted(1000 * x for x in latencies)
    print(f"pickup {name:44s} p50 {statistics.median(ms):7.1f} ms  max {ms[-1]:7.1f} ms  (n={len(ms)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--pickups", type=int, default=10)
    parser.add_argument("--django-tasks-db", action="store_true")
    args = parser.parse_args()
    setup(args.django_tasks_db)
    for name in ("predictor", "django_tasks", "django_tasks_db"):
        logging.getLogger(name).setLevel(logging.WARNING)
    from django.db import connection

    print(f"database: {connection.vendor}; {args.jobs} queued jobs")
    geoweb_claims(args.jobs, args.batch)
    if args.django_tasks_db:
        from django_tasks import task

        globals()["noop"] = task()(noop)  # a module-level Task, as django-tasks requires
        tasks_db_claims(args.jobs)
    from django.conf import settings

    pickup_line("geoweb Worker, woken (embedded)", geoweb_pickup(args.pickups, wake="event"))
    if connection.vendor == "postgresql":
        pickup_line("geoweb Worker, NOTIFY (run_worker)", geoweb_pickup(args.pickups, wake="notify"))
    pickup_line(f"geoweb Worker, polling {settings.WORKER_POLL_S:g} s (run_worker, no listener)",
                geoweb_pickup(args.pickups, wake="poll"))
    if args.django_tasks_db:
        pickup_line("django-tasks-db db_worker (interval 1 s)", tasks_db_pickup(args.pickups))


if __name__ == "__main__":
    main()

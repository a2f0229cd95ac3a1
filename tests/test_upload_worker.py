"""The inference worker: each job is claimed by one worker and run once, dead workers' jobs come back, the loop
stops cleanly, and the embedded worker is one per server process, woken by new uploads."""
from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from predictor import inference, registry, services, worker
from predictor.services import streaming
from predictor.models import Analysis
from tests.conftest import make_jpeg


@pytest.fixture
def tiny_model(tiny_bundle, settings):
    settings.EMBEDDED_WORKER = False  # this process must not run jobs behind the test's back
    worker.stop_embedded_worker()
    registry.install_bundle(tiny_bundle)
    yield
    inference.reset_engine()


def queue(user, count: int) -> list[Analysis]:
    return [services.create_analysis(owner=user, data=make_jpeg(96, 64, colour=(10 * i, 90, 30)))
            for i in range(count)]


@pytest.mark.django_db
def test_claims_do_not_overlap_and_take_the_oldest_first(user):
    jobs = queue(user, 5)
    first = services.claim_analyses(worker_id="a", limit=3)
    second = services.claim_analyses(worker_id="b", limit=10)
    assert [a.pk for a in first] == [j.pk for j in jobs[:3]]
    assert [a.pk for a in second] == [j.pk for j in jobs[3:]]
    assert services.claim_analyses(worker_id="c", limit=10) == []
    assert all(a.status == "running" and a.worker_id == "a" and a.attempts == 1 for a in first)


@pytest.mark.django_db(transaction=True)
def test_concurrent_workers_never_claim_the_same_job(user):
    jobs = queue(user, 12)
    claims: dict[str, list[int]] = {}
    barrier = threading.Barrier(4)

    def claim(name):
        from django.db import connection

        barrier.wait()
        got = []
        while batch := services.claim_analyses(worker_id=name, limit=2):
            got += [a.pk for a in batch]
        claims[name] = got
        connection.close()

    threads = [threading.Thread(target=claim, args=(f"w{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    taken = [pk for got in claims.values() for pk in got]
    assert sorted(taken) == sorted(j.pk for j in jobs)  # every job once, none twice


@pytest.mark.django_db
def test_a_job_is_processed_once_even_with_two_workers(tiny_model, user):
    [job] = queue(user, 1)
    one = worker.Worker(worker_id="one", batch=4)
    two = worker.Worker(worker_id="two", batch=4)
    assert one.run_once() == 1
    assert two.run_once() == 0
    job.refresh_from_db()
    assert job.status == "done" and job.worker_id == "one"
    assert [e["type"] for e in job.events] == ["scene", "partitions", "heatmap", "estimate", "cam", "done"]


@pytest.mark.django_db
def test_a_batch_runs_together(tiny_model, user):
    queue(user, 3)
    assert worker.Worker(worker_id="w", batch=8).run_once() == 3
    rows = list(Analysis.objects.all())
    assert {a.status for a in rows} == {"done"}
    assert {a.timings["batch_size"] for a in rows} == {3}


@pytest.mark.django_db
def test_stale_jobs_of_a_dead_worker_are_requeued_and_then_finished(tiny_model, user):
    stale, fresh = queue(user, 2)
    services.claim_analyses(worker_id="dead", limit=2)
    Analysis.objects.filter(pk=stale.pk).update(heartbeat_at=timezone.now() - timedelta(minutes=5))
    assert services.requeue_stale(timeout_s=60) == 1
    stale.refresh_from_db()
    fresh.refresh_from_db()
    assert stale.status == "queued" and stale.worker_id == "" and fresh.status == "running"
    assert worker.Worker(worker_id="alive", batch=4).run_once() == 1
    stale.refresh_from_db()
    assert stale.status == "done" and stale.attempts == 2


@pytest.mark.django_db
def test_a_run_cut_off_mid_stream_is_stored_as_one_complete_run(tiny_model, user):
    [job] = queue(user, 1)
    [claimed] = services.claim_analyses(worker_id="dies-mid-stream", limit=1)
    streaming._emit(claimed, {"type": "scene", "partial": True})  # what the dead worker got out before dying
    Analysis.objects.filter(pk=job.pk).update(heartbeat_at=timezone.now() - timedelta(minutes=5))
    assert services.requeue_stale(timeout_s=60) == 1
    job.refresh_from_db()
    assert job.events == [] and job.stage == ""
    assert worker.Worker(worker_id="alive", batch=4).run_once() == 1
    job.refresh_from_db()
    assert [e["type"] for e in job.events] == ["scene", "partitions", "heatmap", "estimate", "cam", "done"]
    assert [e["seq"] for e in job.events] == [1, 2, 3, 4, 5, 6]
    assert not any(e.get("partial") for e in job.events)


@pytest.mark.django_db
def test_dead_worker_cannot_write_after_its_job_was_taken_over(tiny_model, user):
    [job] = queue(user, 1)
    [mine] = services.claim_analyses(worker_id="slow", limit=1)
    Analysis.objects.filter(pk=job.pk).update(heartbeat_at=timezone.now() - timedelta(minutes=5))
    services.requeue_stale(timeout_s=60)
    worker.Worker(worker_id="fast", batch=1).run_once()
    services.run_analyses(analyses=[mine])  # the slow worker wakes up and finishes its stale copy
    job.refresh_from_db()
    assert job.worker_id == "fast" and len(job.events) == 6


@pytest.mark.django_db
def test_job_interrupted_too_often_fails_with_a_message(user, settings):
    settings.WORKER_MAX_ATTEMPTS = 2
    [job] = queue(user, 1)
    Analysis.objects.filter(pk=job.pk).update(status="running", attempts=2, claim_token="t",
                                              heartbeat_at=timezone.now() - timedelta(minutes=5))
    services.requeue_stale(timeout_s=60)
    job.refresh_from_db()
    assert job.status == "failed" and "interrupted" in job.error_message
    assert job.events[-1]["type"] == "error"


@pytest.mark.django_db
def test_no_active_model_fails_the_job_with_a_clear_message(user, settings):
    settings.EMBEDDED_WORKER = False
    inference.reset_engine()
    queue(user, 1)
    worker.Worker(worker_id="w").run_once()
    job = Analysis.objects.get()
    assert job.status == "failed" and "No model is installed" in job.error_message


@pytest.mark.django_db
def test_run_worker_once_command(tiny_model, user, capsys):
    queue(user, 2)
    call_command("run_worker", "--once", "--batch", "8")
    assert "ran 2 analyses" in capsys.readouterr().out
    assert set(Analysis.objects.values_list("status", flat=True)) == {"done"}


@pytest.mark.django_db(transaction=True)
def test_stop_lets_the_loop_finish_and_exit(tiny_model, user):
    loop = worker.Worker(worker_id="loop", batch=4, poll_s=0.1, wake=threading.Event())
    thread = threading.Thread(target=loop.run_forever)
    thread.start()
    try:
        queue(user, 1)
        loop.wake.set()
        deadline = timezone.now() + timedelta(seconds=30)
        while Analysis.objects.filter(status="done").count() < 1 and timezone.now() < deadline:
            threading.Event().wait(0.1)
    finally:
        loop.stop()
        thread.join(timeout=10)
    assert not thread.is_alive()
    assert Analysis.objects.get().status == "done"


@pytest.mark.django_db
def test_creating_an_analysis_wakes_the_embedded_worker(user, django_capture_on_commit_callbacks):
    services.analysis_created.clear()
    with django_capture_on_commit_callbacks(execute=True):
        queue(user, 1)
        assert not services.analysis_created.is_set()  # not before the row is committed and visible
    assert services.analysis_created.is_set()


def test_embedded_worker_is_one_per_process(settings, monkeypatch):
    """One supervisor (and so one worker process) per server process; a forked server process starts its own. The
    supervisor itself is tested with real child processes in tests/test_embedded_worker.py."""
    from predictor import embedded_worker

    settings.EMBEDDED_WORKER = True
    started = []

    class Supervisor:
        running = True

        def start(self):
            started.append(self)
            return self

        def stop(self, timeout_s):
            self.running = False

    monkeypatch.setattr(embedded_worker, "EmbeddedWorker", Supervisor)
    monkeypatch.setattr(worker, "_embedded", {"pid": None, "worker": None})
    first = worker.start_embedded_worker()
    assert worker.start_embedded_worker() is first and started == [first]
    monkeypatch.setattr(worker.os, "getpid", lambda: -12345)  # as seen from a forked child
    child = worker.start_embedded_worker()
    assert child is not first and worker._embedded["pid"] == -12345 and len(started) == 2
    worker.stop_embedded_worker()
    assert child.running is False and worker._embedded["worker"] is None


def test_embedded_worker_is_off_when_settings_say_so(settings, monkeypatch):
    monkeypatch.setattr(worker, "_embedded", {"pid": None, "worker": None})
    settings.EMBEDDED_WORKER = False
    assert worker.start_embedded_worker() is None
    assert worker._embedded["worker"] is None

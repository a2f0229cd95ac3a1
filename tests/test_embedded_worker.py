"""The embedded inference worker runs in a child process of the web server (predictor/embedded_worker.py): its
address space is capped, its events reach this process's channel layer and so the page, and when it dies it is
logged and restarted, its analyses given back at once, and an analysis whose worker died WORKER_MAX_ATTEMPTS times
fails with a message the user sees. A batch that fails is retried photo by photo; a re-queued analysis runs alone.
"""
from __future__ import annotations

import logging
import os
import signal
import time

import pytest
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async

from predictor import inference, registry, selectors, services, worker
from predictor.models import Analysis
from tests.conftest import make_jpeg
from tests.streaming import ORDER, open_socket, receive_until

CAP_MB = 6144


@pytest.fixture
def embedded(tiny_bundle, settings):
    """Settings for a real embedded worker (started by the test when it is ready), stopped afterwards."""
    worker.stop_embedded_worker()
    settings.EMBEDDED_WORKER = True
    settings.WORKER_MEMORY_LIMIT_MB = CAP_MB
    settings.WORKER_POLL_S = 0.5
    registry.install_bundle(tiny_bundle)
    yield worker.start_embedded_worker
    worker.stop_embedded_worker()
    inference.reset_engine()


def wait_until(condition, *, timeout_s: float, interval_s: float = 0.05, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"timed out waiting for {what}")


def parent_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as handle:
        return int(handle.read().rsplit(")", 1)[1].split()[1])


def address_space_limit(pid: int) -> int | None:
    with open(f"/proc/{pid}/limits") as handle:
        for line in handle:
            if line.startswith("Max address space"):
                value = line.split()[3]
                return None if value == "unlimited" else int(value)
    return None


def queue(user, count: int) -> list[Analysis]:
    return [services.create_analysis(owner=user, data=make_jpeg(320 + 16 * i, 240, colour=(30 * i, 90, 30)))
            for i in range(count)]


@pytest.mark.django_db(transaction=True)
async def test_the_worker_is_a_capped_child_whose_events_reach_the_page_live(embedded, user):
    [analysis] = await database_sync_to_async(queue)(user, 1)
    socket = await open_socket(analysis.pk, user)
    try:
        status = await socket.receive_json_from(timeout=5)
        assert status["type"] == "status" and status["status"] == "queued"
        supervisor = await sync_to_async(embedded)()
        streamed = await receive_until(socket, {"done", "error"}, timeout=120)
    finally:
        await socket.disconnect()
    assert [m["type"] for m in streamed] == ORDER
    assert not any(m.get("replay") for m in streamed)  # relayed live from the child, not read back
    pid = supervisor.pid
    assert pid is not None and pid != os.getpid() and parent_of(pid) == os.getpid()
    assert address_space_limit(pid) == CAP_MB * 2**20
    stored = await database_sync_to_async(Analysis.objects.get)(pk=analysis.pk)
    assert stored.status == "done" and stored.worker_id == supervisor.worker_id
    assert str(pid) in stored.worker_id.split(":")


@pytest.mark.django_db(transaction=True)
def test_a_killed_worker_is_logged_restarted_and_its_analyses_finish(embedded, user, caplog):
    caplog.set_level(logging.INFO, logger="predictor.embedded_worker")
    jobs = queue(user, 6)
    ids = [job.pk for job in jobs]
    supervisor = embedded()
    first = wait_until(lambda: supervisor.pid, timeout_s=30, what="the worker process")
    wait_until(lambda: Analysis.objects.filter(pk__in=ids, status="running", worker_id=supervisor.worker_id).exists(),
               timeout_s=120, interval_s=0.005, what="an analysis in the worker's hands")
    os.kill(first, signal.SIGKILL)
    wait_until(lambda: supervisor.pid not in (None, first), timeout_s=60, what="a new worker process")
    wait_until(lambda: all(a.is_finished for a in Analysis.objects.filter(pk__in=ids)), timeout_s=180,
               interval_s=0.2, what="every analysis to finish")
    rows = {a.pk: a for a in Analysis.objects.filter(pk__in=ids)}
    assert {a.status for a in rows.values()} == {"done"}
    rerun = [a for a in rows.values() if a.attempts == 2]  # in the dead worker's hands, given back once
    assert rerun and all(a.worker_id.split(":")[2] == str(supervisor.pid) for a in rerun)
    assert supervisor.restarts == 1 and "SIGKILL" in supervisor.status()["last_exit"]
    assert any(r.levelno == logging.ERROR and f"(pid {first}) was killed by SIGKILL" in r.getMessage()
               for r in caplog.records)
    assert parent_of(supervisor.pid) == os.getpid()


@pytest.mark.django_db(transaction=True)
def test_an_analysis_whose_worker_dies_too_often_fails_with_a_message_and_spares_its_neighbour(embedded, user,
                                                                                               settings):
    settings.WORKER_MAX_ATTEMPTS = 2
    target, neighbour = queue(user, 2)
    supervisor = embedded()
    for death in range(2):
        # Kill the worker each time it holds the target: as if this photo killed it.
        pid = wait_until(lambda: Analysis.objects.filter(pk=target.pk, status="running").exists() and supervisor.pid,
                         timeout_s=120, interval_s=0.005, what=f"the target in the worker's hands ({death + 1})")
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: supervisor.pid not in (None, pid), timeout_s=60, what="a new worker process")
    wait_until(lambda: all(a.is_finished for a in Analysis.objects.filter(pk__in=[target.pk, neighbour.pk])),
               timeout_s=120, interval_s=0.2, what="both analyses to finish")
    target.refresh_from_db()
    neighbour.refresh_from_db()
    assert neighbour.status == "done"
    assert target.status == "failed" and "interrupted 2 times" in target.error_message
    assert target.events[-1] == {**target.events[-1], "type": "error", "message": target.error_message}
    # What a (re)connecting page is told first.
    assert selectors.status_message(analysis=target)["error"] == target.error_message
    assert supervisor.restarts == 2


@pytest.mark.django_db
def test_a_failing_batch_is_retried_photo_by_photo(tiny_bundle, settings, user, monkeypatch):
    """A photo whose own processing fails (here: the activation map of a 2048 x 1 strip running out of memory,
    as before the grid was bounded) fails the engine's whole batch; the worker runs the others again alone."""
    from predictor.ml.engine import InferenceEngine

    settings.EMBEDDED_WORKER = False
    worker.stop_embedded_worker()
    registry.install_bundle(tiny_bundle)
    real = InferenceEngine._add_maps

    def cams_out_of_memory_for_strips(self, prediction, crops, concept, fine_class, cells, geometry):
        if geometry.original_width >= 10 * geometry.original_height:
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 9663676416 bytes")
        return real(self, prediction, crops, concept, fine_class, cells, geometry)

    monkeypatch.setattr(InferenceEngine, "_add_maps", cams_out_of_memory_for_strips)
    ordinary = queue(user, 2)
    strip = services.create_analysis(owner=user, data=make_jpeg(2000, 200))
    try:
        assert worker.Worker(worker_id="w", batch=8).run_once() == 3
    finally:
        inference.reset_engine()
    rows = {a.pk: a for a in Analysis.objects.all()}
    assert [rows[a.pk].status for a in ordinary] == ["done", "done"]
    assert [rows[a.pk].timings["batch_size"] for a in ordinary] == [1, 1]  # each run again on its own
    assert rows[strip.pk].status == "failed" and "could not analyse this photo" in rows[strip.pk].error_message


@pytest.mark.django_db
def test_an_analysis_given_back_after_a_death_is_claimed_alone_and_first(user):
    fresh = queue(user, 3)
    [interrupted] = queue(user, 1)
    Analysis.objects.filter(pk=interrupted.pk).update(attempts=1)  # claimed once by a worker that then died
    assert [a.pk for a in services.claim_analyses(worker_id="w", limit=8)] == [interrupted.pk]
    assert [a.pk for a in services.claim_analyses(worker_id="w", limit=8)] == [a.pk for a in fresh]


@pytest.mark.django_db
def test_jobs_of_a_dead_worker_are_given_back_at_once(user, settings):
    settings.WORKER_MAX_ATTEMPTS = 3
    jobs = queue(user, 2)
    claimed = services.claim_analyses(worker_id="embedded:host:1:abc", limit=8)
    services._emit(claimed[0], {"type": "scene", "partial": True})
    assert services.requeue_jobs_of(worker_id="embedded:host:1:abc") == 2
    rows = list(Analysis.objects.filter(pk__in=[j.pk for j in jobs]))
    assert {a.status for a in rows} == {"queued"} and all(a.events == [] and a.worker_id == "" for a in rows)
    assert services.requeue_jobs_of(worker_id="embedded:host:1:abc") == 0

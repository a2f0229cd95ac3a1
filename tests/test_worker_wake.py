"""Scale-out workers (`run_worker`, other processes) are woken by PostgreSQL NOTIFY when a job is queued, instead of
finding it on their next poll; a listener whose connection is cut listens again. PostgreSQL only: the embedded
SQLite mode wakes its worker through the pipe (tests/test_embedded_worker.py)."""
from __future__ import annotations

import threading
import time

import pytest
from django.db import connection

from predictor import services, worker
from predictor.models import Analysis
from tests.conftest import make_jpeg

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def listening_worker(tiny_model, monkeypatch):
    """A worker loop polling only once a minute, with a wake event of its own (nothing in this process sets it):
    only a NOTIFY can make it claim a job within seconds. Claimed analyses are recorded, not run."""
    if connection.vendor != "postgresql":
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's (the PostgreSQL + Redis pass runs this)")
    claimed: dict[int, float] = {}

    def record(*, analyses):
        for analysis in analyses:
            claimed[analysis.pk] = time.monotonic()
        Analysis.objects.filter(pk__in=[a.pk for a in analyses]).update(status="done")

    monkeypatch.setattr(services, "run_analyses", record)
    loop = worker.Worker(worker_id="wake-test", poll_s=60, wake=threading.Event())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not (loop.listener and loop.listener.listening.is_set()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert loop.listener and loop.listener.listening.is_set(), "the worker's listener did not start"
    time.sleep(0.5)  # past the round the listener's start wakes
    yield loop, claimed
    loop.stop()
    thread.join(timeout=15)
    assert not thread.is_alive()


def _claimed_within(claimed: dict, pk: int, seconds: float) -> float | None:
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        if pk in claimed:
            return claimed[pk] - start
        time.sleep(0.01)
    return None


def test_a_queued_upload_wakes_a_worker_in_another_process_at_once(listening_worker, user):
    loop, claimed = listening_worker
    # A row inserted without NOTIFY waits for the poll (a minute here): the wake below is the NOTIFY's.
    silent = Analysis.objects.create(owner=user, original_sha256="0" * 64)
    assert _claimed_within(claimed, silent.pk, 2.0) is None
    analysis = services.create_analysis(owner=user, data=make_jpeg(96, 64))
    waited = _claimed_within(claimed, analysis.pk, 5.0)
    assert waited is not None and waited < 2.0, waited
    assert silent.pk in claimed  # claimed in the same woken round, being older


def test_the_listener_listens_again_after_its_connection_is_cut(listening_worker, user):
    loop, claimed = listening_worker
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                       "WHERE query = 'LISTEN geoweb_queue' AND pid <> pg_backend_pid()")
        assert cursor.fetchone()[0] is True
    deadline = time.monotonic() + 3
    while loop.listener.listening.is_set() and time.monotonic() < deadline:
        time.sleep(0.01)
    deadline = time.monotonic() + 10
    while not loop.listener.listening.is_set() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert loop.listener.listening.is_set()
    time.sleep(0.5)
    analysis = services.create_analysis(owner=user, data=make_jpeg(96, 64))
    waited = _claimed_within(claimed, analysis.pk, 5.0)
    assert waited is not None and waited < 2.0, waited


def test_a_job_queued_inside_a_transaction_that_rolls_back_wakes_nobody(listening_worker, user):
    from django.db import transaction

    loop, claimed = listening_worker
    woken = []
    original = loop.wake.set
    loop.wake.set = lambda: (woken.append(time.monotonic()), original())[1]
    try:
        with pytest.raises(RuntimeError), transaction.atomic():
            services.create_analysis(owner=user, data=make_jpeg(96, 64))
            raise RuntimeError("the request failed after queuing")
        time.sleep(1.5)
    finally:
        loop.wake.set = original
    assert woken == [] and not Analysis.objects.exists()

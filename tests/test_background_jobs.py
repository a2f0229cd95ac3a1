"""Background jobs (a game's guess recompute) run in the inference workers with the analyses' claim, heartbeat,
re-queue and attempt limit; the web process only queues them and never loads a model."""
from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from games import recompute
from games.models import ModelGuess, RecomputeJob
from predictor import inference, jobs, registry, services, worker
from predictor.ml import kinds
from predictor.models import Analysis, Job
from tests.conftest import make_jpeg
from tests.game_factories import make_playable

CHANGELIST = reverse("admin:games_gameimage_changelist")


@pytest.fixture
def tiny_model(tiny_bundle, settings):
    settings.EMBEDDED_WORKER = False
    worker.stop_embedded_worker()
    registry.install_bundle(tiny_bundle)
    inference.reset_engine()
    yield registry.active_bundle_name()
    inference.reset_engine()


@pytest.fixture
def model_loads(monkeypatch):
    """Every model load of this process, with the thread that did it."""
    loads = []
    real = kinds.load_bundle

    def spy(*args, **kwargs):
        loads.append(threading.current_thread().name)
        return real(*args, **kwargs)

    monkeypatch.setattr(kinds, "load_bundle", spy)  # another installed bundle (recompute's own engine)
    monkeypatch.setattr(inference, "load_bundle", spy)  # the active bundle (the shared engine)
    return loads


def job_page(client, job) -> str:
    return client.get(reverse("admin:games_recomputejob_change", args=[job.pk])).content.decode()


@pytest.mark.django_db(transaction=True)
def test_the_admin_action_only_queues_the_recompute_and_a_worker_runs_it(admin_client, tiny_model, model_loads,
                                                                         settings):
    settings.ENGINE_MAX_BATCH = 2
    images = make_playable(3)
    threads_before = set(threading.enumerate())
    response = admin_client.post(CHANGELIST, {"action": "recompute_guesses",
                                              "_selected_action": [image.pk for image in images]})
    assert response.status_code == 302
    # The web process started no thread and loaded no model: the job waits in the database for a worker.
    assert set(threading.enumerate()) <= threads_before
    assert model_loads == [] and inference._engine is None
    job = RecomputeJob.objects.get()
    [queued] = Job.objects.all()
    assert (job.status, queued.status, queued.kind, queued.payload) == ("queued", "queued", recompute.KIND,
                                                                        {"recompute_job": job.pk})
    page = job_page(admin_client, job)
    assert "0 / 3" in page and "Queued" in page and 'http-equiv="refresh"' in page
    assert worker.Worker(worker_id="w").run_once() == 1
    assert model_loads == [threading.current_thread().name]  # loaded by the worker loop
    job.refresh_from_db()
    queued.refresh_from_db()
    assert job.status == "done" and queued.status == "done" and queued.attempts == 1
    assert ModelGuess.objects.filter(model_name=tiny_model).count() == 3
    page = job_page(admin_client, job)
    assert "3 / 3" in page and "Done" in page and 'http-equiv="refresh"' not in page


@pytest.mark.django_db
def test_a_recompute_whose_worker_died_is_requeued_and_given_up_after_the_attempt_limit(admin_client, tiny_model,
                                                                                       settings):
    settings.WORKER_MAX_ATTEMPTS = 2
    job = recompute.start_recompute(images=make_playable(2))
    # A worker claims it, gets one batch done, and dies (the embedded supervisor sees its child exit).
    claimed = services.claim_job(worker_id="dead-1")
    assert claimed.pk == job.queue_job_id and claimed.attempts == 1
    RecomputeJob.objects.filter(pk=job.pk).update(status="running", done=1)
    assert services.requeue_background_jobs_of(worker_id="dead-1") == 1
    job.refresh_from_db()
    assert job.status == "queued" and Job.objects.get().status == "queued"
    # A second worker takes it and goes silent: the next worker's loop gives up on it (two interruptions).
    assert services.claim_job(worker_id="silent-2").attempts == 2
    Job.objects.update(heartbeat_at=timezone.now() - timedelta(seconds=settings.WORKER_HEARTBEAT_TIMEOUT_S + 1))
    assert worker.Worker(worker_id="w").run_once() == 0
    job.refresh_from_db()
    stored = Job.objects.get()
    assert stored.status == "failed" and "interrupted 2 times" in stored.error_message
    assert job.status == "failed" and "interrupted 2 times" in job.message and job.finished_at is not None
    assert "interrupted 2 times" in job_page(admin_client, job)
    assert not ModelGuess.objects.filter(model_name=tiny_model).exists()


@pytest.mark.django_db
def test_a_silent_workers_recompute_is_run_again_from_the_start(tiny_model, settings):
    job = recompute.start_recompute(images=make_playable(3))
    services.claim_job(worker_id="silent")
    RecomputeJob.objects.filter(pk=job.pk).update(status="running", done=2, failed=1, errors=[["x", "old"]])
    Job.objects.update(heartbeat_at=timezone.now() - timedelta(seconds=settings.WORKER_HEARTBEAT_TIMEOUT_S + 1))
    assert worker.Worker(worker_id="w").run_once() == 1  # re-queued, then claimed and run by this worker
    job.refresh_from_db()
    assert (job.status, job.done, job.failed, job.errors) == ("done", 3, 0, [])
    assert Job.objects.get().attempts == 2


@pytest.mark.django_db
def test_a_model_that_cannot_be_loaded_fails_the_recompute_with_its_reason(tiny_model, settings, monkeypatch):
    job = recompute.start_recompute(images=make_playable(1))
    monkeypatch.setattr(inference, "get_engine", lambda: (_ for _ in ()).throw(RuntimeError("no GPU")))
    worker.Worker(worker_id="w").run_once()
    job.refresh_from_db()
    assert job.status == "failed" and "could not be loaded: no GPU" in job.message
    assert Job.objects.get().status == "failed"


@pytest.mark.django_db
def test_uploads_go_between_the_batches_of_a_long_job(user, tiny_model):
    seen = []

    def run(payload, context):
        analysis = services.create_analysis(owner=user, data=make_jpeg())
        context.between_batches()  # the upload that arrived meanwhile is answered before the next batch
        seen.append(Analysis.objects.get(pk=analysis.pk).status)
        return "ok"

    jobs.register("test.long", run=run)
    services.enqueue_job(kind="test.long", payload={})
    assert worker.Worker(worker_id="w").run_once() == 1
    assert seen == ["done"] and Job.objects.get().status == "done"


@pytest.mark.django_db
def test_a_job_of_an_unknown_kind_is_refused_and_a_crashing_one_fails(tiny_model):
    with pytest.raises(LookupError, match="no handler"):
        services.enqueue_job(kind="test.nobody", payload={})
    failures = []
    jobs.register("test.crash", run=lambda payload, context: 1 / 0,
                  on_failed=lambda payload, message: failures.append((payload, message)))
    services.enqueue_job(kind="test.crash", payload={"n": 1})
    worker.Worker(worker_id="w").run_once()
    stored = Job.objects.get()
    assert stored.status == "failed" and "ZeroDivisionError" in stored.error_message
    assert failures == [({"n": 1}, stored.error_message)]


@pytest.mark.django_db
def test_a_command_runs_its_own_recompute_and_leaves_uploads_to_the_workers(user, tiny_model):
    job = recompute.start_recompute(images=make_playable(2))
    upload = services.create_analysis(owner=user, data=make_jpeg())
    assert worker.run_job_here(job_id=job.queue_job_id, timeout_s=120)
    job.refresh_from_db()
    upload.refresh_from_db()
    assert job.status == "done" and job.done == 2
    assert Job.objects.get().worker_id.startswith("command:")
    assert upload.status == "queued"  # a site worker answers it, with events its page hears

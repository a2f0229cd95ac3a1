"""Recompute jobs: run the active model (or another installed one) over game images and store its guesses.

A job is a row here (progress done/total, errors: what the admin shows) and a background job of the inference
workers (predictor/jobs.py, kind `games.recompute`): `start_recompute` creates both in one transaction, and a worker
process (`manage.py run_worker` or the embedded worker's child) claims it with the same heartbeat, re-queue and
attempt limit as upload analyses. The web process never loads a model for it.
"""
from __future__ import annotations

import logging

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from games import scoring
from games.curation import CurationError
from games.difficulty import recompute_difficulty
from games.models import GameImage, ModelGuess, RecomputeJob
from predictor import inference, registry, services
from predictor.jobs import JobContext, JobFailed

logger = logging.getLogger(__name__)

KIND = "games.recompute"


def start_recompute(*, images, user=None, model_name: str | None = None) -> RecomputeJob:
    """Queue a job over `images` for the installed bundle `model_name`, by default the active model; refused when
    there is no such model. A worker runs it; `job.queue_job_id` is the id of its predictor job."""
    if model_name is None:
        name = registry.active_bundle_name() if registry.active_bundle_path() is not None else None
        if name is None:
            raise CurationError("No model is active: install one with `manage.py install_model` (or "
                                "`manage.py ensure_demo_model`) before recomputing guesses.")
    else:
        installed = [bundle.name for bundle in registry.installed_bundles()]
        if model_name not in installed:
            raise CurationError(f"The model {model_name!r} is not installed (installed: "
                                f"{', '.join(installed) or 'none'}); see `manage.py install_model`.")
        name = model_name
    ids = sorted(image.pk for image in images)
    if not ids:
        raise CurationError("No images selected.")
    with transaction.atomic():
        job = RecomputeJob.objects.create(model_name=name, image_ids=ids, total=len(ids),
                                          created_by=user if user is not None and user.is_authenticated else None)
        job.queue_job_id = services.enqueue_job(kind=KIND, payload={"recompute_job": job.pk}).pk
    return job


def run_job(payload: dict, context: JobContext) -> str:
    """The worker's side (registered in GamesConfig.ready): run the recompute to its end."""
    job = run_recompute(job_id=int(payload["recompute_job"]), context=context)
    return f"recompute #{job.pk}: {job.message}"


def job_requeued(payload: dict) -> None:
    """Its worker died: the job waits for the next one (which starts it again from the first image)."""
    RecomputeJob.objects.filter(pk=payload["recompute_job"], status=RecomputeJob.Status.RUNNING).update(
        status=RecomputeJob.Status.QUEUED)


def job_failed(payload: dict, message: str) -> None:
    RecomputeJob.objects.filter(pk=payload["recompute_job"]).update(
        status=RecomputeJob.Status.FAILED, message=message, finished_at=timezone.now())


def run_recompute(*, job_id: int, context: JobContext | None = None) -> RecomputeJob:
    """Run a job to the end in this (worker) process: predictions in batches, guesses stored, progress saved after
    each batch. A re-run after a dead worker starts over; the guesses already stored are simply overwritten."""
    started = RecomputeJob.objects.filter(pk=job_id).exclude(
        status__in=[RecomputeJob.Status.DONE, RecomputeJob.Status.FAILED]).update(
        status=RecomputeJob.Status.RUNNING, started_at=timezone.now(), done=0, failed=0, errors=[], message="")
    job = RecomputeJob.objects.get(pk=job_id)
    if not started:
        return job  # already ended
    own_engine = None
    try:
        if job.model_name == registry.active_bundle_name() and registry.active_bundle_path() is not None:
            engine = inference.get_engine()
            model = inference.get_model()
        else:
            own_engine, model = _bundle_engine(job.model_name)
            engine = own_engine
    except Exception as error:  # noqa: BLE001 - a broken bundle fails the job with its reason
        raise JobFailed(f"the model could not be loaded: {error}") from error
    try:
        return _run_batches(job, engine, model, context)
    finally:
        if own_engine is not None:
            own_engine.close()


def _bundle_engine(name: str):
    """An engine of its own on an installed bundle that is not the active model (closed when the job ends)."""
    from predictor.ml.engine import InferenceEngine
    from predictor.ml.kinds import load_bundle

    device = inference.inference_device()
    model = load_bundle(registry.model_dir() / name, device=device)
    return InferenceEngine(model, device=device, max_batch_size=settings.ENGINE_MAX_BATCH,
                           max_wait_ms=settings.ENGINE_MAX_WAIT_MS), model


def _run_batches(job: RecomputeJob, engine, model, context: JobContext | None) -> RecomputeJob:
    images = {image.pk: image for image in GameImage.objects.filter(pk__in=job.image_ids)}
    missing = [pk for pk in job.image_ids if pk not in images]
    errors = [[f"#{pk}", "the image was deleted"] for pk in missing]
    size = max(1, settings.ENGINE_MAX_BATCH)
    ordered = [images[pk] for pk in job.image_ids if pk in images]
    _progress(job, done=len(missing), failed=len(missing), errors=errors)
    for start in range(0, len(ordered), size):
        batch = ordered[start:start + size]
        blobs, runnable = [], []
        batch_errors = []
        for image in batch:
            try:
                with image.image.open("rb") as handle:
                    blobs.append(handle.read())
                runnable.append(image)
            except (ValueError, OSError) as error:
                batch_errors.append([image.source_id, f"photo file unreadable: {error}"])
        results = engine.predict_many(blobs) if blobs else []
        for image, result in zip(runnable, results):
            if isinstance(result, Exception):
                batch_errors.append([image.source_id, f"prediction failed: {result}"])
                continue
            ModelGuess.objects.update_or_create(
                image=image, model_name=job.model_name,
                defaults={"lat": result.lat, "lon": result.lon,
                          "distance_km": scoring.error_km(true_lat=image.lat, true_lon=image.lon, lat=result.lat,
                                                          lon=result.lon)})
        _progress(job, done=len(batch), failed=len(batch_errors), errors=batch_errors)
        if context is not None:
            context.between_batches()
    recompute_difficulty()
    job.refresh_from_db()
    note = " (untrained model: its guesses are random)" if getattr(model, "untrained", False) else ""
    stored = job.total - job.failed
    return _finish(job, RecomputeJob.Status.DONE, f"{stored} guess(es) stored for {job.model_name}{note}; "
                                                  f"{job.failed} image(s) failed.")


def _progress(job: RecomputeJob, *, done: int, failed: int, errors: list) -> None:
    with transaction.atomic():
        current = RecomputeJob.objects.select_for_update().get(pk=job.pk)
        current.done = F("done") + done
        current.failed = F("failed") + failed
        current.errors = current.errors + errors
        current.save(update_fields=["done", "failed", "errors"])


def _finish(job: RecomputeJob, status: str, message: str) -> RecomputeJob:
    RecomputeJob.objects.filter(pk=job.pk).update(status=status, message=message, finished_at=timezone.now())
    job.refresh_from_db()
    return job


def queue_missing_guesses(*, user=None) -> tuple[RecomputeJob | None, str]:
    """Run the active model over the active game images that no model has answered (no results file covers
    them), storing its guesses under its name. An untrained bundle is never used: its guesses would be random, and
    it is never a game opponent. Returns the job (None when nothing is started) and a line saying what happened."""
    uncovered = list(GameImage.objects.filter(active=True).exclude(image="").filter(model_guesses__isnull=True)
                     .order_by("pk"))
    if not uncovered:
        return None, ""
    active = next((bundle for bundle in registry.installed_bundles() if bundle.active), None)
    count = f"{len(uncovered)} game image(s) have no published answer"
    if active is None:
        return None, f"{count}, and no model is installed to answer them (`manage.py install_model`)."
    if active.untrained:
        return None, (f"{count}; the active model {active.name} is untrained (random weights), so it never answers "
                      "for the game: install a trained model, then use the admin's \"Recompute\" action.")
    job = start_recompute(images=uncovered, user=user, model_name=active.name)
    return job, f"{count}: recompute job #{job.pk} runs {active.name} on them."

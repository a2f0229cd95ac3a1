"""Recompute jobs: run the active model (or another installed one) over game images in the background and store
its guesses.

A job is a row (progress done/total, errors); `start_recompute` creates it and, once committed, runs it in a
daemon thread of this process through the shared inference engine, which batches the photos.
"""
from __future__ import annotations

import logging
import threading

from django.conf import settings
from django.db import close_old_connections, transaction
from django.db.models import F
from django.utils import timezone

from games import scoring
from games.curation import CurationError
from games.difficulty import recompute_difficulty
from games.models import GameImage, ModelGuess, RecomputeJob
from predictor import inference, registry

logger = logging.getLogger(__name__)

_threads: dict[int, threading.Thread] = {}


def start_recompute(*, images, user=None, model_name: str | None = None) -> RecomputeJob:
    """Queue a job over `images` for the installed bundle `model_name`, by default the active model; refused when
    there is no such model."""
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
    job = RecomputeJob.objects.create(model_name=name, image_ids=ids, total=len(ids),
                                      created_by=user if user is not None and user.is_authenticated else None)
    transaction.on_commit(lambda: launch(job.pk))
    return job


def launch(job_id: int) -> threading.Thread:
    thread = threading.Thread(target=_run_in_thread, args=(job_id,), name=f"recompute-{job_id}", daemon=True)
    _threads[job_id] = thread
    thread.start()
    return thread


def wait_for(job_id: int, timeout: float = 60) -> None:
    """Block until this process's thread for the job ends (management commands and tests)."""
    thread = _threads.get(job_id)
    if thread is not None:
        thread.join(timeout)


def _run_in_thread(job_id: int) -> None:
    try:
        run_recompute(job_id=job_id)
    except Exception:  # noqa: BLE001 - the job row records the failure; the thread must not die silently
        logger.exception("recompute job %s failed", job_id)
    finally:
        close_old_connections()


def run_recompute(*, job_id: int) -> RecomputeJob:
    """Run a queued job to the end: predictions in batches, guesses stored, progress saved after each batch."""
    claimed = RecomputeJob.objects.filter(pk=job_id, status=RecomputeJob.Status.QUEUED).update(
        status=RecomputeJob.Status.RUNNING, started_at=timezone.now())
    job = RecomputeJob.objects.get(pk=job_id)
    if not claimed:
        return job  # another thread or process has it
    own_engine = None
    try:
        if job.model_name == registry.active_bundle_name() and registry.active_bundle_path() is not None:
            engine = inference.get_engine()
            model = inference.get_model()
        else:
            own_engine, model = _bundle_engine(job.model_name)
            engine = own_engine
    except Exception as error:  # noqa: BLE001 - a broken bundle fails the job with its reason
        return _finish(job, RecomputeJob.Status.FAILED, f"the model could not be loaded: {error}")
    try:
        return _run_batches(job, engine, model)
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


def _run_batches(job: RecomputeJob, engine, model) -> RecomputeJob:
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

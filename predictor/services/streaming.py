"""Running claimed analyses: one engine batch, then each analysis' events stored (numbered) and published in order."""
from __future__ import annotations

import logging
import time

from django.conf import settings
from django.core.files.storage import default_storage
from django.utils import timezone

from core import images
from predictor import events, granularity, policy
from predictor.ml.model import ActivationMaps
from predictor.models import Analysis, UploadAudit
from predictor.services.cams import cam_event, segmentation_event
from predictor.services.errors import AnalysisGone
from predictor.services.retention import discard_photo

logger = logging.getLogger(__name__)


def run_analyses(*, analyses: list[Analysis]) -> None:
    """Run claimed analyses through the engine as one batch and stream each one's events in order."""
    from predictor.inference import get_engine, get_model

    if not analyses:
        return
    try:
        engine = get_engine()
        model = get_model()
    except Exception as error:  # noqa: BLE001 - every claimed job must end in a state the user can see
        logger.exception("no inference engine")
        for analysis in analyses:
            _fail_quietly(analysis, f"The model is not available: {error}")
        return
    # On a GPU the engine decodes JPEG bytes itself (nvJPEG); on a CPU the photo is decoded once, here.
    gpu_decode = bool(getattr(engine, "gpu_decode", False))
    sources, ready, read_ms = [], [], []
    for analysis in analyses:
        start = time.perf_counter()
        try:
            with default_storage.open(analysis.image.name, "rb") as handle:
                data = handle.read()
            sources.append(data if gpu_decode else images.open_stored(data))
        except images.RejectedImage as error:
            _fail_quietly(analysis, error.message)
            continue
        except OSError:
            _fail_quietly(analysis, "The stored photo is missing. Please upload it again.")
            continue
        except Exception:  # noqa: BLE001 - out of memory, say: this photo fails, the batch goes on
            logger.exception("analysis %s: the stored photo could not be read", analysis.pk)
            _fail_quietly(analysis, "The stored photo could not be read. Please upload it again.")
            continue
        ready.append(analysis)
        read_ms.append((time.perf_counter() - start) * 1000)
    if not ready:
        return
    cam_cells = max(0, settings.UPLOAD_CELL_CAMS)
    start = time.perf_counter()
    # Maps only from a model that has them; the cam event says so for one that has none.
    if not engine.offers(ActivationMaps):
        cam_cells = 0
    predictions = engine.predict_many(sources, cam=engine.offers_maps, cam_cells=cam_cells)
    batch_ms = (time.perf_counter() - start) * 1000
    batch_sizes = [len(ready)] * len(ready)
    if len(ready) > 1:
        # The engine fails a whole batch when any part of it fails (out of memory, say): each failed photo is run
        # again on its own, so that only a photo that fails by itself ends failed.
        for i, prediction in enumerate(predictions):
            if isinstance(prediction, Exception):
                logger.warning("analysis %s failed in a batch of %d (%s); running it alone", ready[i].pk,
                               len(ready), prediction)
                [predictions[i]] = engine.predict_many([sources[i]], cam=engine.offers_maps, cam_cells=cam_cells)
                batch_sizes[i] = 1
    for analysis, source, prediction, read, size in zip(ready, sources, predictions, read_ms, batch_sizes):
        if isinstance(prediction, Exception):
            logger.warning("analysis %s: the engine refused the photo: %s", analysis.pk, prediction)
            _fail_quietly(analysis, "The model could not analyse this photo. Please try another one.")
            continue
        timings = {"read_ms": read, "batch_ms": batch_ms, "batch_size": size}
        try:
            _stream(analysis, prediction, photo=source, model=model, timings=timings)
        except AnalysisGone:
            logger.info("analysis %s went away while running", analysis.pk)
        except Exception:  # noqa: BLE001
            logger.exception("analysis %s failed while its results were prepared", analysis.pk)
            _fail_quietly(analysis, "Something went wrong while the results were prepared. Please try again.")


def _granularity(analysis: Analysis, prediction, photo) -> tuple[str, str]:
    """The level this analysis' answer is limited to, and why it is coarser than configured (or "")."""
    level = policy.level_for(analysis.owner)
    faces = None
    if settings.UPLOAD_FACE_DETECTION:
        from predictor import faces as face_detector

        try:
            image = images.open_stored(photo) if isinstance(photo, bytes) else photo
            faces = face_detector.count_faces(image)
        except Exception:  # noqa: BLE001 - without a working check the photo is treated as showing people
            logger.exception("analysis %s: face detection failed", analysis.pk)
    reasons = policy.sensitive_reasons(concept=prediction.scene.concept, faces=faces)
    if reasons:
        level = policy.coarser(level, policy.COUNTRY)
    limit, why = policy.non_localizable(refined=getattr(prediction, "refined", None))
    if limit is not None and policy.coarser(level, limit) != level:  # said only where it made the answer coarser
        level = policy.coarser(level, limit)
        reasons.append(why)
    return level, policy.limit_sentence(level, reasons)


def _stream(analysis: Analysis, prediction, *, photo, model, timings: dict) -> None:
    start = time.perf_counter()
    level, reason = _granularity(analysis, prediction, photo)
    Analysis.objects.filter(pk=analysis.pk).update(model_name=prediction.model_name,
                                                   untrained=bool(prediction.untrained), granularity=level,
                                                   coarsening_reason=reason)
    analysis.granularity, analysis.coarsening_reason = level, reason
    UploadAudit.objects.filter(analysis_id=analysis.pk).update(model_name=prediction.model_name, granularity=level,
                                                               coarsening_reason=reason)
    # Everything that carries a location goes through the limiter before it is stored or sent.
    limiter = granularity.Limiter(prediction, list(model.partitionings), level)
    _emit(analysis, {**events.scene_event(prediction), "granularity": level, "coarsening_reason": reason})
    _emit(analysis, limiter.partitions_event())
    _emit(analysis, limiter.heatmap_event())
    estimate = _emit(analysis, {**limiter.estimate_event(), "coarsening_reason": reason})
    refined = limiter.refined_event()
    if refined is not None:
        _emit(analysis, refined)
    _emit(analysis, cam_event(analysis, photo, prediction, level=level, partitionings=list(model.partitionings),
                               answer_cell=limiter.answer_cell(), answer_label=estimate["label"]))
    segmentation = segmentation_event(analysis, photo, prediction, model=model)
    if segmentation is not None:
        _emit(analysis, segmentation)
    timings = {**timings, **{f"model_{k}": v for k, v in prediction.timings_ms.items()},
               "events_ms": (time.perf_counter() - start) * 1000}
    created = analysis.created_at
    now = timezone.now()
    if analysis.started_at:
        timings["queued_ms"] = (analysis.started_at - created).total_seconds() * 1000
    timings["total_ms"] = (now - created).total_seconds() * 1000
    # A withheld answer has no location: lat, lon, confidence and radius are None (the pages say so).
    summary = {"lat": estimate["lat"], "lon": estimate["lon"], "label": estimate["label"],
               "confidence": estimate["confidence"], "radius_km": estimate["radius_km"],
               "decimals": estimate.get("decimals", 3), "confidence_of": estimate.get("confidence_of", ""),
               "concept": prediction.scene.concept, "model_name": prediction.model_name,
               "untrained": bool(prediction.untrained), "granularity": level, "coarsening_reason": reason}
    discard_photo(analysis)
    # The final state is stored before `done` is sent, so whoever hears `done` can rely on the database.
    _emit(analysis, events.done_event(timings), status=Analysis.Status.DONE,
          extra={"timings": timings, "finished_at": now}, summary=summary)


def _emit(analysis: Analysis, event: dict, *, status: str | None = None, extra: dict | None = None,
          summary: dict | None = None, expected_token: str | None = None) -> dict:
    """Append the event to the stored list (numbered), then publish it. Raises AnalysisGone if the claim is lost."""
    token = analysis.claim_token if expected_token is None else expected_token
    stored = analysis.result.get("events", [])
    event = {**event, "seq": len(stored) + 1, "analysis": analysis.pk}
    result = {**analysis.result, "events": [*stored, event]}
    if summary is not None:
        result["summary"] = summary
    fields = {"result": result, "stage": event["type"], "heartbeat_at": timezone.now(), **(extra or {})}
    if status:
        fields["status"] = status
    updated = Analysis.objects.held(analysis, token=token).update(**fields)
    if not updated:
        raise AnalysisGone(analysis.pk)
    analysis.result = result
    for name, value in fields.items():
        setattr(analysis, name, value)
    try:
        events.publish(analysis_id=analysis.pk, event=event)
    except Exception:  # noqa: BLE001 - the page catches up from the database on its next (re)connect
        logger.exception("could not publish %s of analysis %s", event["type"], analysis.pk)
    return event


def fail_analysis(analysis: Analysis, message: str, *, expected_token: str | None = None) -> None:
    _emit(analysis, events.error_event(message), status=Analysis.Status.FAILED,
          extra={"error_message": message, "finished_at": timezone.now()}, expected_token=expected_token)
    discard_photo(analysis)


def _fail_quietly(analysis: Analysis, message: str) -> None:
    try:
        fail_analysis(analysis, message)
    except AnalysisGone:
        pass

"""Upload analysis, the writing side: create an analysis from an upload, claim queued ones for a worker, run them
through the engine while storing and publishing their events, re-queue jobs of dead workers, delete.
"""
from __future__ import annotations

import json
import logging
import math
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import connection, transaction
from django.db.models import F
from django.urls import reverse
from django.utils import timezone

from core import images
from predictor import events, granularity, policy
from predictor.ml.model import SEGMENTATION_OVERLAY, ActivationMaps
from predictor.ml.prediction import ATTENTION_MAP, HIERARCHY
from predictor.models import Analysis, UploadAudit
from predictor.policy import FINE, REGION

logger = logging.getLogger(__name__)

# Set when an analysis is created, so that an embedded worker waiting in this process starts at once.
analysis_created = threading.Event()


class UploadRefused(Exception):
    """The upload is refused for a reason other than the photo itself (paused, over quota)."""

    def __init__(self, message: str, *, status: int, retry_after_s: int | None = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.retry_after_s = retry_after_s


class AnalysisGone(Exception):
    """The analysis was deleted or taken over by another worker while this one worked on it."""


def create_analysis(*, owner, data: bytes, keep_photo: bool = False, client_ip: str | None = None) -> Analysis:
    """Check and clean the photo, store the clean copy and a thumbnail, queue the analysis and audit the upload.

    The photo and thumbnail are deleted once the analysis ends unless `keep_photo`.
    Raises `images.RejectedImage` or `UploadRefused`; in both cases nothing is stored.
    """
    if not policy.uploads_enabled():
        raise UploadRefused("Photo analysis is paused at the moment. Please try again later.", status=503)
    quota = settings.UPLOAD_DAILY_QUOTA
    if quota > 0:
        now = timezone.now()
        # Counted from the audit log, so deleting analyses does not give uploads back.
        recent = list(UploadAudit.objects.filter(user=owner, created_at__gte=now - timedelta(days=1))
                      .order_by("created_at").values_list("created_at", flat=True))
        if len(recent) >= quota:
            # The next upload fits once enough of the last day's uploads are more than a day old.
            frees_at = recent[len(recent) - quota] + timedelta(days=1)
            wait_s = max(1, math.ceil((frees_at - now).total_seconds()))
            raise UploadRefused(f"You have analysed {quota} photos in the last 24 hours, the daily limit. "
                                f"Please try again in {_duration(wait_s)}.", status=429, retry_after_s=wait_s)
    _release_pooled_connection()
    clean = images.clean_upload(data)
    stored: list[str] = []
    try:
        image_name = default_storage.save(_new_name("photo", "jpg"), ContentFile(clean.jpeg))
        stored.append(image_name)
        thumbnail_name = default_storage.save(_new_name("thumb", "jpg"), ContentFile(clean.thumbnail))
        stored.append(thumbnail_name)
        model_name, untrained = _active_model()
        analysis = Analysis.objects.create(
            owner=owner, image=image_name, thumbnail=thumbnail_name, original_sha256=clean.sha256,
            original_format=clean.source_format, original_width=clean.source_width,
            original_height=clean.source_height, keep_photo=bool(keep_photo),
            # The model that will answer, as far as known now: the page of a queued analysis flags an untrained
            # one from its first message. The worker records the model it actually used.
            model_name=model_name, untrained=untrained,
        )
        UploadAudit.objects.create(user=owner, username=owner.get_username(), image_sha256=clean.sha256,
                                   analysis_id=analysis.pk, client_ip=client_ip or None)
    except BaseException:
        for name in stored:
            default_storage.delete(name)
        raise
    transaction.on_commit(analysis_created.set)
    return analysis


def _active_model() -> tuple[str, bool]:
    """Name and untrained flag of the active bundle, from its config file (no weights are loaded)."""
    from predictor import registry
    from predictor.ml.bundle import CONFIG

    path = registry.active_bundle_path()
    if path is None:
        return "", False
    try:
        config = json.loads((Path(path) / CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return path.name, False
    return str(config.get("name") or path.name)[:120], bool(config.get("untrained", False))


def _duration(seconds: int) -> str:
    hours, minutes = divmod(math.ceil(seconds / 60), 60)
    if hours:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    return f"{max(1, minutes)} min"


def _release_pooled_connection() -> None:
    """Give this thread's database connection back to the pool while the photo is checked and re-encoded.

    Cleaning a photo takes tens of milliseconds of CPU (far more when many arrive at once) and needs no database.
    Holding a pooled connection meanwhile lets a burst of uploads take every connection in the pool, and the
    requests queued behind them time out as 503s. Outside a transaction the connection is taken again, from the
    pool, by the next query.
    """
    if getattr(connection, "pool", None) is not None and not connection.in_atomic_block:
        connection.close()


def _new_name(kind: str, extension: str) -> str:
    return f"analyses/{kind}/{uuid.uuid4().hex}.{extension}"


def delete_analysis(*, analysis: Analysis) -> None:
    """Delete the row and every file of it: the photo, the thumbnail and the activation maps."""
    names = analysis_files(analysis)
    Analysis.objects.filter(pk=analysis.pk).delete()
    for name in names:
        default_storage.delete(name)


def delete_all_analyses(*, owner) -> int:
    """Delete every analysis of `owner` with all its files; returns how many there were."""
    count = 0
    for analysis in list(Analysis.objects.filter(owner=owner)):
        delete_analysis(analysis=analysis)
        count += 1
    return count


def delete_account(*, user) -> None:
    """Delete the user's uploads (rows and files) and then the account. Audit rows stay, without the account."""
    delete_all_analyses(owner=user)
    user.delete()


def analysis_files(analysis: Analysis) -> list[str]:
    """Every stored file of an analysis: photo, thumbnail, activation map and the per-cell activation maps."""
    own = [f.name for f in (analysis.image, analysis.thumbnail, analysis.cam) if f]
    segmentation = (analysis.result or {}).get("segmentation_file")
    own += [segmentation] if segmentation else []
    return own + list(dict.fromkeys(cell_cam_files(analysis)))  # a fine and a hierarchy cell may share a file


def cell_cam_files(analysis: Analysis) -> list[str]:
    """Storage names of the per-cell activation maps, in the order of their URLs (/analyze/<id>/cam/<n>.png)."""
    return [entry["file"] for entry in (analysis.result or {}).get("cell_cams", []) if entry.get("file")]



def _discard_photo(analysis: Analysis) -> None:
    """Retention: once an analysis ends, its photo and thumbnail go unless the owner asked to keep them."""
    if analysis.keep_photo:
        return
    names = [f.name for f in (analysis.image, analysis.thumbnail) if f]
    if not names:
        return
    Analysis.objects.filter(pk=analysis.pk).update(image="", thumbnail="")
    analysis.image, analysis.thumbnail = "", ""
    for name in names:
        default_storage.delete(name)


# --- the worker's side ---------------------------------------------------------------------------------------

def claim_analyses(*, worker_id: str, limit: int) -> list[Analysis]:
    """Atomically take up to `limit` queued analyses, oldest first, for `worker_id`; each goes to one worker only.

    An analysis whose earlier run was cut off (its worker died or went silent) is taken on its own, before the
    others: if its photo is what stopped the worker, it cannot take a batch of other people's photos with it again.
    """
    queued = Analysis.objects.filter(status=Analysis.Status.QUEUED)
    claimed = _claim(queued.filter(attempts__gt=0), worker_id=worker_id, limit=1)
    return claimed or _claim(queued.filter(attempts=0), worker_id=worker_id, limit=limit)


def _claim(queued, *, worker_id: str, limit: int) -> list[Analysis]:
    token = uuid.uuid4().hex
    now = timezone.now()
    claim = dict(status=Analysis.Status.RUNNING, worker_id=worker_id, claim_token=token, heartbeat_at=now,
                 started_at=now, attempts=F("attempts") + 1)
    queued = queued.order_by("created_at", "id")
    if connection.features.has_select_for_update_skip_locked:
        with transaction.atomic():
            ids = list(queued.select_for_update(skip_locked=True).values_list("pk", flat=True)[:limit])
            if not ids:
                return []
            Analysis.objects.filter(pk__in=ids).update(**claim)
    else:
        # SQLite has no row locks: the conditional UPDATE is atomic, so a row another worker took first is skipped.
        ids = list(queued.values_list("pk", flat=True)[:limit])
        if not ids:
            return []
        Analysis.objects.filter(pk__in=ids, status=Analysis.Status.QUEUED).update(**claim)
    return list(Analysis.objects.filter(claim_token=token).order_by("created_at", "id"))


def heartbeat(*, analyses: list[Analysis]) -> int:
    """Tell other workers that these claims are alive; returns how many are still held."""
    tokens = {a.claim_token for a in analyses}
    return Analysis.objects.filter(claim_token__in=tokens, status=Analysis.Status.RUNNING).update(
        heartbeat_at=timezone.now())


def interrupted_message(attempts: int) -> str:
    return (f"The analysis was interrupted {attempts} times (the inference worker stopped while it worked on this "
            "photo), so it was given up. Please try again later, or with another photo.")


def requeue_stale(*, timeout_s: float) -> int:
    """Give the jobs of workers silent for `timeout_s` back to the queue (or fail them after too many tries)."""
    cutoff = timezone.now() - timedelta(seconds=timeout_s)
    stale = Analysis.objects.filter(status=Analysis.Status.RUNNING, heartbeat_at__lt=cutoff)
    return _requeue(list(stale), why="silent")


def requeue_jobs_of(*, worker_id: str) -> int:
    """Give back the running jobs of a worker known to be dead (the embedded worker's supervisor saw it exit), at
    once rather than after the heartbeat timeout; a job interrupted WORKER_MAX_ATTEMPTS times fails instead."""
    return _requeue(list(Analysis.objects.filter(status=Analysis.Status.RUNNING, worker_id=worker_id)), why="dead")


def _requeue(analyses: list[Analysis], *, why: str) -> int:
    count = 0
    for analysis in analyses:
        if analysis.attempts >= settings.WORKER_MAX_ATTEMPTS:
            try:
                _fail(analysis, interrupted_message(analysis.attempts), expected_token=analysis.claim_token)
            except AnalysisGone:
                continue
            logger.error("analysis %s failed: interrupted %d times (last by %s worker %s)", analysis.pk,
                         analysis.attempts, why, analysis.worker_id)
        else:
            # The next worker streams the analysis from the start; the interrupted run's events go, so that the
            # stored result is one complete run. A page that saw some of them already skips their repeats by seq.
            updated = Analysis.objects.filter(pk=analysis.pk, claim_token=analysis.claim_token,
                                              status=Analysis.Status.RUNNING).update(
                status=Analysis.Status.QUEUED, worker_id="", claim_token="", heartbeat_at=None, stage="",
                result={**(analysis.result or {}), "events": []})
            if not updated:
                continue
            logger.warning("re-queued analysis %s of %s worker %s", analysis.pk, why, analysis.worker_id)
        count += 1
    if count:
        analysis_created.set()
    return count


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
    reason = ("Shown at country level because " + " and ".join(reasons) + ".") if reasons else ""
    return level, reason


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
    _emit(analysis, _cam_event(analysis, photo, prediction, level=level, partitionings=list(model.partitionings),
                               answer_cell=limiter.answer_cell(), answer_label=estimate["label"]))
    if SEGMENTATION_OVERLAY in prediction.overlays:
        _emit(analysis, _segmentation_event(analysis, photo, prediction, model=model))
    timings = {**timings, **{f"model_{k}": v for k, v in prediction.timings_ms.items()},
               "events_ms": (time.perf_counter() - start) * 1000}
    created = analysis.created_at
    now = timezone.now()
    if analysis.started_at:
        timings["queued_ms"] = (analysis.started_at - created).total_seconds() * 1000
    timings["total_ms"] = (now - created).total_seconds() * 1000
    summary = {"lat": estimate["lat"], "lon": estimate["lon"], "label": estimate["label"],
               "confidence": estimate["confidence"], "radius_km": estimate["radius_km"],
               "decimals": estimate.get("decimals", 3), "confidence_of": estimate.get("confidence_of", ""),
               "concept": prediction.scene.concept, "model_name": prediction.model_name,
               "untrained": bool(prediction.untrained), "granularity": level, "coarsening_reason": reason}
    _discard_photo(analysis)
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
    updated = Analysis.objects.filter(pk=analysis.pk, claim_token=token,
                                      status=Analysis.Status.RUNNING).update(**fields)
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


def _fail(analysis: Analysis, message: str, *, expected_token: str | None = None) -> None:
    _emit(analysis, events.error_event(message), status=Analysis.Status.FAILED,
          extra={"error_message": message, "finished_at": timezone.now()}, expected_token=expected_token)
    _discard_photo(analysis)


def _fail_quietly(analysis: Analysis, message: str) -> None:
    try:
        _fail(analysis, message)
    except AnalysisGone:
        pass


def _cam_event(analysis: Analysis, photo, prediction, *, level: str, partitionings: list, answer_cell=None,
               answer_label: str = "") -> dict:
    """Store the activation maps this user may see and build the `cam` event that links them.

    The overall map is of the estimate's fine cell only at fine level; a limited answer gets the map of the coarse
    cell it stands for (`Limiter.answer_cell`: the estimated cell at region level, the most probable cell inside
    the estimated country at country level), so that the caption and the estimate name the same place. Per-cell maps
    exist for the top cells of the partitionings the limiter exposes: all of them (and the hierarchy) at fine level,
    the coarse one at region level, none at country level.
    """
    names = [p.name for p in partitionings]
    coarse, finest = names[0], names[-1]
    count = max(0, settings.UPLOAD_CELL_CAMS)
    shown = ({FINE: [*names, HIERARCHY], REGION: [coarse]}).get(level, [])
    exposed = []  # (layer the page draws, token, key into prediction.cell_cams)
    for layer in shown:
        for cell in prediction.top_cells.get(layer, [])[:count]:
            key = (finest if layer == HIERARCHY else layer, cell.class_index)
            if key in prediction.cell_cams:
                exposed.append((layer, cell.token, key))
    message = None
    if prediction.cam_kind == ATTENTION_MAP:
        # One map of the photo, the same whatever the cell: it shows no location, so every level gets it.
        overall, caption = prediction.cam, "the model's attention, the same for every cell"
    elif level == FINE:
        overall, caption = prediction.cam, "the estimate's cell"
    else:
        overall = prediction.cell_cams.get((coarse, answer_cell.class_index)) if answer_cell else None
        if overall is None and answer_cell is not None and prediction.cell_cams:
            # The answer's cell is not among the top cells the engine made maps for (at country level the country
            # with the most probability need not hold the single most probable cells): make its map now.
            overall = _map_of_cell(photo, prediction, coarse, answer_cell.class_index)
        if level == REGION and answer_cell:
            caption = f"the estimated {coarse} cell {answer_cell.token} ({answer_label})"
        else:
            caption = f"the most probable area in {answer_label}" if answer_label else "the most probable area"
        if overall is None and prediction.cell_cams:
            message = (f"No activation map for {answer_label or 'the estimate'}: maps are made for the model's "
                       f"{count} most probable cells, and none of them lies there.")
    url = _store_cam(analysis, photo, overall)
    cells = _store_cell_cams(analysis, photo, prediction, exposed)
    return events.cam_event(url, cells=cells, caption=caption if url else None, message=message)


def _segmentation_event(analysis: Analysis, photo, prediction, *, model) -> dict:
    """Store the segmentation overlay (through the image door) and build the `segmentation` event that links it."""
    from predictor.ml.segmentation import class_shares, palette

    classes = prediction.overlays[SEGMENTATION_OVERLAY]
    count = int((model.config.get("segmentation") or {}).get("num_classes") or int(classes.max()) + 1)
    size = images.stored_size(photo) if isinstance(photo, bytes) else photo.size
    png = images.segmentation_overlay_png(size, classes, palette(count))
    name = default_storage.save(_new_name("seg", "png"), ContentFile(png))
    old = (analysis.result or {}).get("segmentation_file")
    result = {**analysis.result, "segmentation_file": name}
    if not Analysis.objects.filter(pk=analysis.pk, claim_token=analysis.claim_token).update(result=result):
        default_storage.delete(name)
        raise AnalysisGone(analysis.pk)
    analysis.result = result
    if old and old != name:
        default_storage.delete(old)  # a re-run after a dead worker replaces the earlier overlay
    return events.segmentation_event(reverse("analysis-segmentation", args=[analysis.pk]),
                                     classes=class_shares(classes, count))


def segmentation_file(analysis: Analysis) -> str | None:
    return (analysis.result or {}).get("segmentation_file") or None


def _map_of_cell(photo, prediction, partitioning: str, class_index: int):
    """The activation map of one cell for a photo the engine has already answered (one more pass of the answering
    network's convolutional body over the photo's crops); None if it cannot be made."""
    from predictor.inference import get_engine, get_model
    from predictor.ml.prediction import S3_CONCEPTS
    from predictor.ml.preprocess import prepare_pil

    try:
        engine, model = get_engine(), get_model()
        image = images.open_stored(photo) if isinstance(photo, bytes) else photo
        crops, _, geometry = prepare_pil(image, model.crops)
        [cam] = engine.activation_maps(crops, concept=S3_CONCEPTS.index(prediction.scene.concept),
                                       cells=[(partitioning, class_index)], geometry=geometry)
        return cam
    except Exception:  # noqa: BLE001 - the page then says there is no map for the answer
        logger.exception("could not make the activation map of %s cell %d", partitioning, class_index)
        return None


def _overlay_png(photo, cam) -> bytes:
    size = images.stored_size(photo) if isinstance(photo, bytes) else photo.size
    return images.activation_overlay_png(size, cam)


def _store_cam(analysis: Analysis, photo, cam) -> str | None:
    if cam is None:
        return None
    name = default_storage.save(_new_name("cam", "png"), ContentFile(_overlay_png(photo, cam)))
    updated = Analysis.objects.filter(pk=analysis.pk, claim_token=analysis.claim_token).update(cam=name)
    if not updated:
        default_storage.delete(name)
        raise AnalysisGone(analysis.pk)
    old = analysis.cam.name if analysis.cam else ""
    if old and old != name:
        default_storage.delete(old)  # a re-run after a dead worker replaces the earlier overlay
    analysis.cam = name
    return reverse("analysis-cam", args=[analysis.pk])


def _store_cell_cams(analysis: Analysis, photo, prediction, exposed: list) -> dict[str, dict[str, str]]:
    """Save one overlay PNG per exposed cell, record the names in the result; returns layer -> token -> URL."""
    entries, saved, by_key = [], [], {}
    try:
        for layer, token, key in exposed:
            if key not in by_key:  # a hierarchy cell is also a fine cell: one file serves both
                by_key[key] = default_storage.save(_new_name("cam", "png"),
                                                   ContentFile(_overlay_png(photo, prediction.cell_cams[key])))
                saved.append(by_key[key])
            entries.append({"partitioning": layer, "token": token, "file": by_key[key]})
        old = cell_cam_files(analysis)
        result = {**analysis.result, "cell_cams": entries}
        updated = Analysis.objects.filter(pk=analysis.pk, claim_token=analysis.claim_token).update(result=result)
        if not updated:
            raise AnalysisGone(analysis.pk)
    except BaseException:
        for name in saved:
            default_storage.delete(name)
        raise
    analysis.result = result
    for name in old:
        if name not in saved:
            default_storage.delete(name)  # a re-run after a dead worker replaces the earlier overlays
    cells: dict[str, dict[str, str]] = {}
    for n, entry in enumerate(entries):
        cells.setdefault(entry["partitioning"], {})[entry["token"]] = reverse("analysis-cell-cam",
                                                                              args=[analysis.pk, n])
    return cells

"""Activation maps: which maps a user may see at the answer's level, stored as overlay PNGs, and the `cam` event."""
from __future__ import annotations

import logging

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.urls import reverse

from core import images
from predictor import events
from predictor.ml.model import SEGMENTATION_OVERLAY
from predictor.ml.prediction import ATTENTION_MAP, HIERARCHY
from predictor.models import Analysis
from predictor.policy import FINE, REGION, WITHHELD
from predictor.services.errors import AnalysisGone
from predictor.services.retention import cell_cam_files, new_file_name

logger = logging.getLogger(__name__)


def cam_event(analysis: Analysis, photo, prediction, *, level: str, partitionings: list, answer_cell=None,
               answer_label: str = "") -> dict:
    """Store the activation maps this user may see and build the `cam` event that links them.

    The overall map is of the estimate's fine cell only at fine level; a limited answer gets the map of the coarse
    cell it stands for (`Limiter.answer_cell`: the estimated cell at region level, the most probable cell inside
    the estimated country at country level), so that the caption and the estimate name the same place. Per-cell maps
    exist for the top cells of the partitionings the limiter exposes: all of them (and the hierarchy) at fine level,
    the coarse one at region level, none at country level. A withheld answer has no cell, so no cell's map either
    (an attention map, the same for every cell, is still shown).
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
    elif level == WITHHELD:
        overall, caption = None, None
        message = "No activation map: no location is given for this photo, so no cell's evidence is shown."
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
    name = default_storage.save(new_file_name("cam", "png"), ContentFile(_overlay_png(photo, cam)))
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
                by_key[key] = default_storage.save(new_file_name("cam", "png"),
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


def segmentation_event(analysis: Analysis, photo, prediction, *, model) -> dict | None:
    """Store the segmentation overlay (through the image door) and build the `segmentation` event that links it; None
    when the answering model has no segmentation network."""
    if SEGMENTATION_OVERLAY not in prediction.overlays:
        return None
    from predictor.ml.segmentation import class_shares, palette

    classes = prediction.overlays[SEGMENTATION_OVERLAY]
    count = int((model.config.get("segmentation") or {}).get("num_classes") or int(classes.max()) + 1)
    size = images.stored_size(photo) if isinstance(photo, bytes) else photo.size
    png = images.segmentation_overlay_png(size, classes, palette(count))
    name = default_storage.save(new_file_name("seg", "png"), ContentFile(png))
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

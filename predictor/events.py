"""The events an analysis streams (scene, partitions, heatmap, estimate, cam, done, error): built from a
`Prediction` as small JSON payloads, and published to the analysis' channel-layer group.
"""
from __future__ import annotations

import asyncio
import functools
import json
import threading

import numpy as np
from channels.layers import InMemoryChannelLayer, get_channel_layer

from predictor import places
from predictor.ml.geodesy import great_circle_km
from predictor.ml.partitions import Partitioning
from predictor.ml.prediction import HIERARCHY, Prediction

STAGES = ("scene", "partitions", "heatmap", "estimate", "cam", "done")
PARTITION_TOP_CELLS = 5
ESTIMATE_CANDIDATES = 5
HEATMAP_CELLS_PER_PARTITIONING = 150
# Daphne refuses frames over 1 MiB; a heat map stays far below, whatever the engine returns.
HEATMAP_MAX_BYTES = 256 * 1024
CONFIDENCE_RADIUS_MASS = 0.5


def group_name(analysis_id: int) -> str:
    return f"analysis.{analysis_id}"


def _cell(cell) -> dict:
    return {"token": cell.token, "class_index": int(cell.class_index), "probability": round(float(cell.probability), 6),
            "lat": round(float(cell.lat), 5), "lon": round(float(cell.lon), 5)}


def scene_event(prediction: Prediction) -> dict:
    scene = prediction.scene
    return {
        "type": "scene",
        # The first event names the model, so a page that was open before the run can flag an untrained one.
        "model_name": prediction.model_name,
        "untrained": bool(prediction.untrained),
        # Trained geolocation networks behind an untrained scene classifier: the scene (and ISN routing) is noise.
        "scene_untrained": bool(prediction.scene_untrained),
        "s3": {concept: round(float(p), 6) for concept, p in scene.s3.items()},
        "concept": scene.concept,
        "places365": [{"label": label, "probability": round(float(p), 6)} for label, p in scene.places365_top[:5]],
    }


def partitions_event(prediction: Prediction) -> dict:
    return {
        "type": "partitions",
        "partitionings": {name: [_cell(c) for c in cells[:PARTITION_TOP_CELLS]]
                          for name, cells in prediction.top_cells.items()},
    }


@functools.lru_cache(maxsize=65536)
def _polygon(partitioning: Partitioning, index: int) -> dict:
    # Cell outlines never change for a loaded partitioning; computing them with s2sphere is the slow part.
    return partitioning.cell_polygon(index)


def _partitioning_for(name: str, by_name: dict[str, Partitioning], ordered: list[Partitioning]) -> Partitioning:
    if name == HIERARCHY:
        return ordered[-1]  # f* ranks the finest partitioning's cells
    return by_name[name]


def heatmap_event(prediction: Prediction, partitionings: list[Partitioning]) -> dict:
    """GeoJSON of the most probable cells of each partitioning, feature property `partitioning` says which."""
    by_name = {p.name: p for p in partitionings}
    features = []
    for name, cells in prediction.top_cells.items():
        partitioning = _partitioning_for(name, by_name, partitionings)
        for cell in cells[:HEATMAP_CELLS_PER_PARTITIONING]:
            index = partitioning.index_of(cell.token)
            if index is None:
                continue
            features.append({
                "type": "Feature",
                "geometry": _polygon(partitioning, index),
                "properties": {"partitioning": name, "token": cell.token, "level": int(partitioning.levels[index]),
                               "probability": round(float(cell.probability), 6),
                               "lat": round(float(cell.lat), 5), "lon": round(float(cell.lon), 5)},
            })
    features.sort(key=lambda f: -f["properties"]["probability"])
    event = {"type": "heatmap", "geojson": {"type": "FeatureCollection", "features": features}}
    while features and len(json.dumps(event, separators=(",", ":"))) > HEATMAP_MAX_BYTES:
        del features[-max(1, len(features) // 10):]
    event["cells"] = len(features)
    return event


def confidence_radius_km(prediction: Prediction) -> float:
    """Radius around the estimate that holds half the probability of the ranked f* cells, between 25 and 2500 km."""
    cells = prediction.top_cells.get(HIERARCHY) or next(iter(prediction.top_cells.values()), [])
    if not cells:
        return 2500.0
    lats = np.array([c.lat for c in cells])
    lons = np.array([c.lon for c in cells])
    probs = np.array([c.probability for c in cells], dtype=float)
    distances = np.asarray(great_circle_km(prediction.lat, prediction.lon, lats, lons), dtype=float)
    order = np.argsort(distances)
    mass = np.cumsum(probs[order])
    target = CONFIDENCE_RADIUS_MASS * min(1.0, float(probs.sum()))
    reached = np.nonzero(mass >= target)[0]
    radius = float(distances[order][reached[0]] if len(reached) else distances.max())
    return float(min(2500.0, max(25.0, radius)))


def estimate_event(prediction: Prediction) -> dict:
    cells = (prediction.top_cells.get(HIERARCHY) or [])[:ESTIMATE_CANDIDATES]
    points = [(prediction.lat, prediction.lon)] + [(c.lat, c.lon) for c in cells]
    named = places.reverse_geocode(points)
    return {
        "type": "estimate",
        "lat": round(float(prediction.lat), 5),
        "lon": round(float(prediction.lon), 5),
        "place": named[0],
        "label": places.place_label(named[0]),
        "confidence": round(float(prediction.confidence), 6),
        "radius_km": round(confidence_radius_km(prediction), 1),
        "candidates": [dict(_cell(c), place=place, label=places.place_label(place))
                       for c, place in zip(cells, named[1:])],
    }


def cam_event(url: str | None, *, cells: dict[str, dict[str, str]] | None = None,
              caption: str | None = None, message: str | None = None) -> dict:
    """The overall activation map's URL (and what it is of), plus `cells`: partitioning -> cell token -> URL of that
    cell's map, for the cells the page may show (already limited by the caller). Without a map, `message` says why
    (by default: the model gives none)."""
    cells = cells or {}
    if url is None:
        return {"type": "cam", "url": None, "message": message or "This model gives no activation map.",
                "cells": cells}
    event = {"type": "cam", "url": url, "cells": cells}
    if caption:
        event["caption"] = caption
    return event


def segmentation_event(url: str, *, classes: list[dict]) -> dict:
    """The segmentation overlay the model computed (models whose bundle carries a segmentation network): its URL
    and the classes covering most of the photo ({"index", "label", "colour", "share"})."""
    return {"type": "segmentation", "url": url, "classes": classes}


def done_event(timings_ms: dict[str, float]) -> dict:
    return {"type": "done", "timings_ms": {k: round(float(v), 2) for k, v in timings_ms.items()}}


def error_event(message: str) -> dict:
    return {"type": "error", "message": message}


# --- publishing ----------------------------------------------------------------------------------------------

_live_loop: asyncio.AbstractEventLoop | None = None
_thread_loops = threading.local()
# In the embedded worker's child process: events go to the parent web process, whose channel layer holds the groups.
_relay = None


def relay_to(send) -> None:
    """Send every event published in this process through `send(analysis_id, event)` instead of the channel layer
    (the embedded worker process hands its events to the web process this way); None restores the layer."""
    global _relay
    _relay = send


def register_live_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Called by consumers: the in-memory layer's queues belong to the server's event loop, so events from the
    embedded worker thread must be handed to that loop rather than sent from a loop of their own."""
    global _live_loop
    _live_loop = loop


def _own_loop() -> asyncio.AbstractEventLoop:
    # One persistent loop per publishing thread: channels_redis keeps its connections per loop.
    loop = getattr(_thread_loops, "loop", None)
    if loop is None or loop.is_closed():
        loop = _thread_loops.loop = asyncio.new_event_loop()
    return loop


def publish(*, analysis_id: int, event: dict) -> None:
    """Send one event to everyone watching the analysis. Best effort: the database is the source of truth."""
    if _relay is not None:
        _relay(analysis_id, event)
        return
    layer = get_channel_layer()
    if layer is None:
        return
    message = {"type": "analysis.event", "event": event}
    coroutine = layer.group_send(group_name(analysis_id), message)
    loop = _live_loop
    if isinstance(layer, InMemoryChannelLayer) and loop is not None and loop.is_running() and not loop.is_closed():
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is not loop:
            asyncio.run_coroutine_threadsafe(coroutine, loop).result(timeout=10)
            return
    _own_loop().run_until_complete(coroutine)

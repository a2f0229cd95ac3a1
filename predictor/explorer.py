"""Read side of the partition explorer: the active model's partitionings as GeoJSON.

(The game-image explorer belongs to play mode: games.selectors.game_image_points and games.views.)"""
from __future__ import annotations

import functools
import json

import s2sphere

from predictor.ml.partitions import Partitioning


class NoPartitionings(Exception):
    """No model is active, so there are no partitionings to show."""


def _partitionings() -> tuple[str, list[Partitioning]]:
    from predictor import inference

    try:
        model = inference.get_model()
    except inference.NoActiveModel as missing:
        raise NoPartitionings(str(missing)) from None
    return model.name, list(model.partitionings)


def partitioning_names() -> list[str]:
    return [p.name for p in _partitionings()[1]]


def partitioning_geojson(*, name: str) -> bytes:
    model_name, partitionings = _partitionings()
    names = [p.name for p in partitionings]
    if name not in names:
        raise KeyError(name)
    return _geojson(model_name, tuple(names), names.index(name), tuple(partitionings))


@functools.lru_cache(maxsize=8)
def _geojson(model_name: str, names: tuple[str, ...], position: int, partitionings: tuple) -> bytes:
    """Every cell with its token, level, training-image count and the tokens of its parents in coarser ones."""
    partitioning = partitionings[position]
    coarser = partitionings[:position]
    features = []
    for index, token in enumerate(partitioning.tokens):
        cell = s2sphere.CellId.from_token(token)
        parents = {}
        for parent_partitioning in coarser:
            for level in range(cell.level() - 1, 0, -1):
                parent_token = cell.parent(level).to_token()
                if parent_partitioning.index_of(parent_token) is not None:
                    parents[parent_partitioning.name] = parent_token
                    break
        features.append({
            "type": "Feature",
            "geometry": partitioning.cell_polygon(index),
            "properties": {"token": token, "class_index": index, "level": int(partitioning.levels[index]),
                           "images": int(partitioning.counts[index]), "parents": parents},
        })
    counts = [int(c) for c in partitioning.counts]
    return json.dumps({"type": "FeatureCollection", "model": model_name, "partitioning": partitioning.name,
                       "max_images": max(counts) if counts else 0, "features": features},
                      separators=(",", ":")).encode()

"""Build S2-cell partitionings from training-image coordinates, with the paper's adaptive splitting algorithm.

Start with every image in its level-2 S2 cell; drop cells with <= tau_min images; while a cell holds > tau_max
images (and the level is below 30), move the images of every over-full cell one level down; drop small cells
again. A cell's coordinate is the mean latitude/longitude of its images. Classes are ordered by S2 cell id
(Hilbert-curve order), so the result does not depend on the order of the input.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import s2sphere

from predictor.ml.geodesy import coordinates_in_range, valid_coordinates
from predictor.ml.partitions import HIERARCHY_NAMES, MAX_LEVEL, MIN_LEVEL, Partitioning

# The paper's three partitionings were built from MP-16 with tau_min = 50 and these tau_max, coarse -> fine.
PAPER_NUM_IMAGES = 4_723_695
PAPER_TAU_MIN = 50
PAPER_TAU_MAX = (5000, 2000, 1000)


def leaf_cell_ids(lats, lons) -> np.ndarray:
    """S2 leaf (level-30) cell ids as uint64, computed once per distinct coordinate pair."""
    lats = np.asarray(lats, dtype=np.float64)
    lons = np.asarray(lons, dtype=np.float64)
    if lats.shape != lons.shape or lats.ndim != 1:
        raise ValueError("lats and lons must be 1-D arrays of the same length")
    if not (np.isfinite(lats).all() and np.isfinite(lons).all()):
        raise ValueError("coordinates contain NaN or infinite values")
    if not coordinates_in_range(lats, lons).all():
        raise ValueError("latitudes must lie in [-90, 90] and longitudes in [-180, 180]")
    pairs, inverse = np.unique(np.stack([lats, lons], axis=1), axis=0, return_inverse=True)
    ids = np.fromiter(
        (s2sphere.CellId.from_lat_lng(s2sphere.LatLng.from_degrees(lat, lon)).id() for lat, lon in pairs),
        dtype=np.uint64, count=len(pairs))
    return ids[inverse.reshape(-1)]


def parent_ids(ids: np.ndarray, level: int) -> np.ndarray:
    """Ancestor ids at `level` of S2 cell ids (of a finer level), by bit arithmetic as S2 defines it."""
    lsb = np.uint64(1) << np.uint64(2 * (MAX_LEVEL - level))
    return (ids & ~(lsb - np.uint64(1))) | lsb


def cell_token(cell_id: int) -> str:
    """S2 token: the 64-bit id in hex without trailing zeros (as CellId.to_token)."""
    return f"{int(cell_id):016x}".rstrip("0") or "X"


def build_partitioning(lats, lons, *, tau_min: int, tau_max: int, min_level: int = MIN_LEVEL,
                       max_level: int = MAX_LEVEL, name: str) -> Partitioning:
    """The paper's partitioning of the given image coordinates (see the module docstring).

    Cells at max_level that still hold more than tau_max images cannot be split and are kept as they are.
    """
    _check_arguments(tau_min, tau_max, min_level, max_level)
    lats = np.asarray(lats, dtype=np.float64)
    lons = np.asarray(lons, dtype=np.float64)
    return _partition(leaf_cell_ids(lats, lons), lats, lons, tau_min=tau_min, tau_max=tau_max,
                      min_level=min_level, max_level=max_level, name=name)


def _partition(leaves: np.ndarray, lats: np.ndarray, lons: np.ndarray, *, tau_min: int, tau_max: int,
               min_level: int, max_level: int, name: str) -> Partitioning:
    if leaves.size == 0:
        raise ValueError("no coordinates to partition")
    num_images = int(leaves.size)

    cells = parent_ids(leaves, min_level)
    kept = _in_cells_above(cells, tau_min)
    leaves, cells, lats, lons = leaves[kept], cells[kept], lats[kept], lons[kept]

    level = min_level
    while level < max_level:
        over_full = _in_cells_above(cells, tau_max)
        if not over_full.any():
            break
        level += 1
        # Only images of over-full cells move down; every over-full cell is at the current level, because cells
        # left behind at a coarser level held <= tau_max images and never change again.
        cells[over_full] = parent_ids(leaves[over_full], level)

    kept = _in_cells_above(cells, tau_min)
    cells, lats, lons = cells[kept], lats[kept], lons[kept]
    unique, inverse, counts = np.unique(cells, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    mean_lat = np.bincount(inverse, weights=lats, minlength=len(unique)) / counts
    mean_lon = np.bincount(inverse, weights=lons, minlength=len(unique)) / counts
    return Partitioning(name=name, tokens=[cell_token(c) for c in unique], counts=counts, lat=mean_lat,
                        lon=mean_lon, num_images=num_images)


def _check_arguments(tau_min: int, tau_max: int, min_level: int, max_level: int) -> None:
    if tau_min < 0 or tau_max <= tau_min:
        raise ValueError(f"need 0 <= tau_min < tau_max, got tau_min={tau_min}, tau_max={tau_max}")
    if not 0 <= min_level <= max_level <= MAX_LEVEL:
        raise ValueError(f"need 0 <= min_level <= max_level <= {MAX_LEVEL}, got {min_level}, {max_level}")


def _in_cells_above(cells: np.ndarray, threshold: int) -> np.ndarray:
    """Mask of the items whose cell holds more than `threshold` items."""
    _, inverse, counts = np.unique(cells, return_inverse=True, return_counts=True)
    return counts[inverse.reshape(-1)] > threshold


def paper_scaled_taus(num_images: int) -> tuple[int, tuple[int, ...]]:
    """tau_min and the three tau_max of the paper, scaled by num_images / 4,723,695 (tau_min at least 1)."""
    scale = num_images / PAPER_NUM_IMAGES
    tau_min = max(1, round(PAPER_TAU_MIN * scale))
    tau_maxes = tuple(max(tau_min + 1, round(t * scale)) for t in PAPER_TAU_MAX)
    return tau_min, tau_maxes


def build_hierarchy(lats, lons, *, tau_min: int, tau_maxes, names=HIERARCHY_NAMES,
                    min_level: int = MIN_LEVEL, max_level: int = MAX_LEVEL) -> list[Partitioning]:
    """Coarse -> fine partitionings from one set of coordinates (tau_maxes strictly decreasing), so they nest."""
    tau_maxes = list(tau_maxes)
    if len(tau_maxes) != len(names):
        raise ValueError(f"{len(tau_maxes)} tau_max values for {len(names)} names")
    if any(a <= b for a, b in zip(tau_maxes, tau_maxes[1:])):
        raise ValueError(f"tau_max values must decrease from coarse to fine, got {tau_maxes}")
    _check_arguments(tau_min, min(tau_maxes), min_level, max_level)
    lats = np.asarray(lats, dtype=np.float64)
    lons = np.asarray(lons, dtype=np.float64)
    leaves = leaf_cell_ids(lats, lons)  # the slow part (pure-Python s2sphere), done once for all three
    return [_partition(leaves, lats, lons, tau_min=tau_min, tau_max=t, min_level=min_level, max_level=max_level,
                       name=name) for t, name in zip(tau_maxes, names)]


def read_coordinates(path: str | Path, *, lat_col: str | None = None, lon_col: str | None = None,
                     skipped: list[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Latitude and longitude columns of a CSV with a header, matched case-insensitively (by default any of the
    names preprocess_images knows: LAT/lat/latitude, LON/lon/lng/longitude); or the photos of a shard folder.

    A bad row raises ValueError with its line number, unless `skipped` is given: then the row is left out and its
    reason appended there (a few odd rows in millions should not stop a build).
    """
    from predictor.ml.train.datasets import LAT_COLUMNS, LON_COLUMNS

    path = Path(path)
    if path.is_dir():  # a shard folder: the coordinates of the photos preprocess_images stored there
        from predictor.ml.train.holdout import read_samples
        try:
            samples = list(read_samples(path))
        except (FileNotFoundError, ValueError) as error:
            raise ValueError(f"{path}: a folder, but not a shard folder ({error})") from None
        if not samples:
            raise ValueError(f"{path}: no coordinates")
        return np.array([s.lat for s in samples]), np.array([s.lon for s in samples])
    try:
        handle = path.open(newline="", encoding="utf-8-sig")
    except FileNotFoundError:
        raise ValueError(f"{path}: file not found") from None
    with handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise ValueError(f"{path}: empty file")
        header = [h.strip() for h in header]
        lowered = [h.lower() for h in header]

        def column(explicit: str | None, candidates: tuple[str, ...], option: str) -> int:
            for name in ([explicit] if explicit else candidates):
                if name.lower() in lowered:
                    return lowered.index(name.lower())
            wanted = explicit or "/".join(candidates)
            raise ValueError(f"{path}: no column {wanted} in the header {header} (choose with {option})")

        i = column(lat_col, LAT_COLUMNS, "--lat-col")
        j = column(lon_col, LON_COLUMNS, "--lon-col")
        lats, lons = [], []
        for number, row in enumerate(reader, start=2):
            if not row:
                continue
            try:
                lat, lon = float(row[i]), float(row[j])
                problem = "" if valid_coordinates(lat, lon) else f"coordinates out of range: {lat}, {lon}"
            except (ValueError, IndexError):
                problem = f"not a coordinate pair: {row}"
            if problem:
                if skipped is None:
                    raise ValueError(f"{path}:{number}: {problem}")
                skipped.append(f"line {number}: {problem}")
                continue
            lats.append(lat)
            lons.append(lon)
    if not lats:
        raise ValueError(f"{path}: no coordinates")
    return np.array(lats), np.array(lons)


def partitioning_summary(partitioning: Partitioning, *, tau_max: int | None = None) -> dict:
    """Figures worth printing about a built partitioning: sizes, levels, and cells over tau_max (unsplittable)."""
    counts, levels = partitioning.counts, partitioning.levels
    over = np.flatnonzero(counts > tau_max) if tau_max is not None else np.array([], dtype=int)
    return {
        "name": partitioning.name,
        "cells": len(partitioning),
        "images_in": partitioning.num_images,
        "images_kept": int(counts.sum()),
        "count_min": int(counts.min()),
        "count_median": float(np.median(counts)),
        "count_max": int(counts.max()),
        "level_min": int(levels.min()),
        "level_max": int(levels.max()),
        "cells_per_level": {int(level): int(n) for level, n in zip(*np.unique(levels, return_counts=True))},
        "over_tau_max": [(partitioning.tokens[i], int(counts[i]), int(levels[i])) for i in over],
    }

"""Search within Cell (SwC) and Prediction Density (PD), after visloc-estimation (Kordopatis-Zilos et al., ICMR 2021;
Panagiotopoulos et al., MMM 2022; Apache-2.0): the pieces that do not depend on a bundle.

- `RetrievalHead`: a small residual MLP on the backbone's pooled features giving an L2-normalised embedding.
- `contrastive_loss`: trains it beside the classification heads. Within a batch, two photos taken within
  `positive_km` of each other (or in the same fine cell) are positives, every other photo is a negative; the loss
  is the supervised-contrastive one (Khosla et al., 2020) on cosine similarities over a temperature. Chosen over a
  triplet loss because it uses every in-batch pair at once and needs no mining, and over a plain InfoNCE because a
  batch may hold several photos of one place (all of them are positives).
- `BackgroundCollection`: every training photo's embedding (float16), coordinate and fine cell, stored as
  memory-mapped arrays grouped by cell, so a search inside a cell reads only that cell's rows.
- `refine`: the top cell(s) -> the `top_k` most similar background photos inside them -> DBSCAN on their
  coordinates (haversine, `eps_km`) -> the medoid of the largest cluster.
- `prediction_density`: MeVer's confidence: the probability mass of the cells whose centres lie within
  `conf_scale_km` of the most probable cell; the photo is localizable when it exceeds `conf_thres`.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .geodesy import great_circle_km

EARTH_RADIUS_KM = 6371.0
EMBEDDING_DIM = 256
# The background collection's files, inside its folder (a bundle's "background/").
MANIFEST = "background.json"
EMBEDDINGS = "embeddings.f16"  # float16 [N, dim], rows grouped by fine cell
COORDS = "coords.f32"  # float32 [N, 2] (lat, lon)
OFFSETS = "offsets.i64"  # int64 [cells + 1]: the rows of cell c are offsets[c]:offsets[c + 1]
BACKGROUND_FILES = (MANIFEST, EMBEDDINGS, COORDS, OFFSETS)


def bytes_per_image(dim: int = EMBEDDING_DIM) -> int:
    """Disk (and page cache) bytes one background photo takes: float16 embedding + float32 coordinate."""
    return 2 * dim + 8


class RetrievalHead(nn.Module):
    """Pooled backbone features [N, C] -> L2-normalised embeddings [N, dim]: a projection, one pre-norm residual
    MLP block, normalisation."""

    def __init__(self, in_dim: int, dim: int = EMBEDDING_DIM):
        super().__init__()
        self.in_dim, self.dim = int(in_dim), int(dim)
        self.project = nn.Linear(self.in_dim, self.dim)
        self.norm = nn.LayerNorm(self.dim)
        self.mlp = nn.Sequential(nn.Linear(self.dim, 2 * self.dim), nn.GELU(), nn.Linear(2 * self.dim, self.dim))

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        x = self.project(pooled)
        x = x + self.mlp(self.norm(x))
        return F.normalize(x.float(), dim=1)


def haversine_matrix_km(lat: torch.Tensor, lon: torch.Tensor) -> torch.Tensor:
    """Pairwise great-circle distances [N, N] in km between the points (lat, lon in degrees)."""
    lat, lon = torch.deg2rad(lat.double()), torch.deg2rad(lon.double())
    dlat = lat[:, None] - lat[None, :]
    dlon = lon[:, None] - lon[None, :]
    a = torch.sin(dlat / 2) ** 2 + torch.cos(lat)[:, None] * torch.cos(lat)[None, :] * torch.sin(dlon / 2) ** 2
    return (2 * EARTH_RADIUS_KM * torch.asin(torch.sqrt(a.clamp(0, 1)))).float()


def contrastive_loss(embeddings: torch.Tensor, lats: torch.Tensor, lons: torch.Tensor, *, positive_km: float,
                     cells: torch.Tensor | None = None, temperature: float = 0.1) -> torch.Tensor:
    """Supervised contrastive loss over one batch of L2-normalised embeddings [N, d].

    Positives of photo i: the other photos within `positive_km` of it, or (when `cells` [N] is given) in its fine
    cell. Negatives: every other photo of the batch. Photos without a positive in the batch add nothing; a batch
    without any positive pair gives a zero that still has a gradient (so DDP and autocast see the head used).
    """
    n = embeddings.shape[0]
    z = embeddings.float()
    logits = z @ z.T / temperature
    eye = torch.eye(n, dtype=torch.bool, device=z.device)
    with torch.no_grad():
        positive = haversine_matrix_km(lats.to(z.device), lons.to(z.device)) <= positive_km
        if cells is not None:
            cells = cells.to(z.device)
            positive |= cells[:, None] == cells[None, :]
        positive &= ~eye
        counts = positive.sum(dim=1)
        anchors = counts > 0
    if not bool(anchors.any()):
        return z.sum() * 0.0
    log_prob = logits.masked_fill(eye, float("-inf")).log_softmax(dim=1)
    per_anchor = -(log_prob.masked_fill(~positive, 0.0).sum(dim=1)[anchors]) / counts[anchors]
    return per_anchor.mean()


# --- confidence -------------------------------------------------------------------------------------------------


def unit_vectors(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """[n, 3] points on the unit sphere (for fast "within d km" tests: a dot product against cos(d / R))."""
    phi, lam = np.radians(np.asarray(lat, dtype=np.float64)), np.radians(np.asarray(lon, dtype=np.float64))
    return np.stack([np.cos(phi) * np.cos(lam), np.cos(phi) * np.sin(lam), np.sin(phi)], axis=-1)


def prediction_density(probabilities: np.ndarray, cell_lat: np.ndarray, cell_lon: np.ndarray, *, cell: int,
                       scale_km: float, cell_xyz: np.ndarray | None = None) -> float:
    """MeVer's prediction density: the probability mass of the cells whose centres lie within `scale_km` of the
    centre of `cell` (the predicted one), the cell itself included. 0..1. `cell_xyz` (unit_vectors of the cells)
    may be given to save recomputing it per photo."""
    xyz = unit_vectors(cell_lat, cell_lon) if cell_xyz is None else cell_xyz
    within = xyz @ xyz[cell] >= math.cos(min(scale_km / EARTH_RADIUS_KM, math.pi)) - 1e-12
    return float(np.asarray(probabilities, dtype=np.float64)[within].sum())


# --- clustering -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cluster:
    lat: float
    lon: float
    size: int  # neighbours in the largest cluster
    candidates: int  # neighbours clustered


def dbscan_labels(lat: np.ndarray, lon: np.ndarray, *, eps_km: float, min_samples: int = 1) -> np.ndarray:
    """DBSCAN cluster labels (-1: noise) of points, haversine distance, `eps_km` radius, as scikit-learn's DBSCAN
    computes them (tests/test_retrieval.py checks the two agree). For the few neighbours of one search (top_k) this
    exact pairwise version takes microseconds where scikit-learn's set-up costs milliseconds; above 256 points
    scikit-learn's ball tree is used."""
    lat, lon = np.asarray(lat, dtype=np.float64), np.asarray(lon, dtype=np.float64)
    if lat.size > 256:
        from sklearn.cluster import DBSCAN

        return DBSCAN(eps=eps_km / EARTH_RADIUS_KM, min_samples=min_samples, metric="haversine",
                      algorithm="ball_tree").fit(np.radians(np.stack([lat, lon], axis=1))).labels_
    near = np.asarray(great_circle_km(lat[:, None], lon[:, None], lat[None, :], lon[None, :])) <= eps_km
    core = near.sum(axis=1) >= min_samples
    labels = np.full(lat.size, -1, dtype=np.int64)
    cluster = 0
    for start in range(lat.size):
        if labels[start] != -1 or not core[start]:
            continue
        labels[start] = cluster
        stack = [start]
        while stack:
            point = stack.pop()
            if not core[point]:
                continue
            for other in np.flatnonzero(near[point] & (labels == -1)):
                labels[other] = cluster
                stack.append(int(other))
        cluster += 1
    return labels


def densest_cluster_medoid(lat: np.ndarray, lon: np.ndarray, *, eps_km: float, min_samples: int = 1,
                           similarities: np.ndarray | None = None) -> Cluster:
    """DBSCAN (haversine) on the points; the medoid (the member with the least summed great-circle distance to the
    others) of the largest cluster. Ties go to the cluster with the larger summed similarity. With `min_samples`
    > 1 and no cluster at all, the most similar point answers (a cluster of one)."""
    lat, lon = np.asarray(lat, dtype=np.float64), np.asarray(lon, dtype=np.float64)
    if lat.size == 0:
        raise ValueError("no points to cluster")
    sims = np.ones_like(lat) if similarities is None else np.asarray(similarities, dtype=np.float64)
    labels = dbscan_labels(lat, lon, eps_km=eps_km, min_samples=min_samples)
    clustered = labels[labels >= 0]
    if clustered.size == 0:
        best = int(np.argmax(sims))
        return Cluster(float(lat[best]), float(lon[best]), 1, int(lat.size))
    ids = np.unique(clustered)
    sizes = np.array([(labels == c).sum() for c in ids])
    mass = np.array([sims[labels == c].sum() for c in ids])
    winner = ids[np.lexsort((-mass, -sizes))[0]]
    members = np.flatnonzero(labels == winner)
    spread = great_circle_km(lat[members, None], lon[members, None], lat[None, members], lon[None, members])
    medoid = members[int(np.argmin(np.asarray(spread).reshape(members.size, members.size).sum(axis=1)))]
    return Cluster(float(lat[medoid]), float(lon[medoid]), int(members.size), int(lat.size))


# --- the background collection ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SearchSettings:
    """How SwC searches and when PD calls a photo localizable (visloc-estimation's defaults)."""

    top_k: int = 10
    eps_km: float = 1.0
    min_samples: int = 1
    top_cells: int = 1  # search the most probable fine cell, or the union of the few most probable
    conf_thres: float = 0.2
    conf_scale_km: float = 25.0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict | None) -> "SearchSettings":
        values = values or {}
        known = cls.__dataclass_fields__
        return cls(**{k: type(getattr(cls(), k))(v) for k, v in values.items() if k in known})


class BackgroundCollection:
    """A background collection opened read-only: memory-mapped, so opening costs nothing and a search pages in
    only the rows of the cells it reads."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        manifest = json.loads((self.folder / MANIFEST).read_text(encoding="utf-8"))
        self.manifest = manifest
        self.images, self.dim, self.cells = int(manifest["images"]), int(manifest["dim"]), int(manifest["cells"])
        self.offsets = np.fromfile(self.folder / OFFSETS, dtype=np.int64)
        if self.offsets.shape != (self.cells + 1,) or int(self.offsets[-1]) != self.images:
            raise ValueError(f"{self.folder}: {OFFSETS} does not match {MANIFEST} ({self.cells} cells, "
                             f"{self.images} images)")
        shape = (max(self.images, 1), self.dim)
        self.embeddings = (np.memmap(self.folder / EMBEDDINGS, dtype=np.float16, mode="r", shape=(self.images,
                                                                                                   self.dim))
                           if self.images else np.zeros(shape, dtype=np.float16))
        self.coords = (np.memmap(self.folder / COORDS, dtype=np.float32, mode="r", shape=(self.images, 2))
                       if self.images else np.zeros((1, 2), dtype=np.float32))

    def count(self, cell: int) -> int:
        if not 0 <= cell < self.cells:
            return 0
        return int(self.offsets[cell + 1] - self.offsets[cell])

    def rows(self, cells: list[int]) -> np.ndarray:
        parts = [np.arange(self.offsets[c], self.offsets[c + 1]) for c in cells if self.count(c)]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def search(self, query: np.ndarray, cells: list[int], top_k: int) -> tuple[np.ndarray, np.ndarray]:
        """The `top_k` rows inside `cells` most similar to `query` [dim] (cosine, the embeddings being unit
        vectors): (row indices, similarities), best first; empty when the cells hold no background photo."""
        parts = [(int(self.offsets[c]), int(self.offsets[c + 1])) for c in cells if self.count(c)]
        if not parts:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        query = np.asarray(query, dtype=np.float32)
        rows = np.concatenate([np.arange(a, b) for a, b in parts])
        sims = np.concatenate([np.asarray(self.embeddings[a:b], dtype=np.float32) @ query for a, b in parts])
        k = min(top_k, sims.size)
        best = np.argpartition(-sims, k - 1)[:k] if k < sims.size else np.arange(sims.size)
        best = best[np.argsort(-sims[best], kind="stable")]
        return rows[best], sims[best]


def write_background(folder: str | Path, *, embeddings: np.ndarray, coords: np.ndarray, cells: np.ndarray,
                     num_cells: int, partitioning: str, extra: dict | None = None) -> Path:
    """Write a background collection: rows sorted (stably) by fine cell, float16 embeddings, float32
    coordinates, the cell offsets and a manifest. Returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    embeddings = np.asarray(embeddings)  # float16 input stays float16: 5 M rows at 256-d are 2.6 GB, not 5
    coords = np.asarray(coords, dtype=np.float32).reshape(-1, 2)
    cells = np.asarray(cells, dtype=np.int64)
    if not embeddings.shape[0] == coords.shape[0] == cells.shape[0]:
        raise ValueError("embeddings, coordinates and cells must have one row per image")
    if cells.size and (cells.min() < 0 or cells.max() >= num_cells):
        raise ValueError(f"cell indices must lie in 0..{num_cells - 1}")
    order = np.argsort(cells, kind="stable")
    dim = int(embeddings.shape[1]) if embeddings.ndim == 2 else EMBEDDING_DIM
    with open(folder / EMBEDDINGS, "wb") as handle:  # reordered in chunks: no second copy of the collection
        for start in range(0, order.size, 65536):
            handle.write(np.ascontiguousarray(embeddings[order[start:start + 65536]], dtype=np.float16).tobytes())
    coords[order].tofile(folder / COORDS)
    offsets = np.zeros(num_cells + 1, dtype=np.int64)
    np.cumsum(np.bincount(cells, minlength=num_cells), out=offsets[1:])
    offsets.tofile(folder / OFFSETS)
    manifest = {"format": "geoweb-background/1", "images": int(cells.size), "dim": dim, "cells": int(num_cells),
                "partitioning": partitioning, "dtype": "float16", "bytes_per_image": bytes_per_image(dim),
                "megabytes_per_million_images": bytes_per_image(dim), "cells_with_images":
                int(np.count_nonzero(np.diff(offsets))), **(extra or {})}
    tmp = folder / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, folder / MANIFEST)
    return folder


# --- refinement -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Refinement:
    lat: float
    lon: float
    density: float  # PD, 0..1
    localizable: bool
    refined: bool  # False: the collection lacks the cell(s); lat/lon are the classifier's
    neighbours: int
    cluster_size: int
    note: str


def refine(*, embedding: np.ndarray, fine_probabilities: np.ndarray, cell_lat: np.ndarray, cell_lon: np.ndarray,
           background: BackgroundCollection | None, settings: SearchSettings,
           cell_tokens: list[str] | None = None, cell_xyz: np.ndarray | None = None) -> Refinement:
    """One photo: SwC inside the most probable fine cell(s) of `fine_probabilities` (f*), with PD. Falls back to the
    top cell's centre, saying so, when the collection holds no photo there."""
    probabilities = np.asarray(fine_probabilities, dtype=np.float64)
    wanted = max(1, settings.top_cells)
    if wanted == 1:
        order = np.array([int(np.argmax(probabilities))])
    else:
        order = np.argpartition(-probabilities, min(wanted, probabilities.size) - 1)[:wanted]
        order = order[np.argsort(-probabilities[order], kind="stable")]
    top = int(order[0])
    density = prediction_density(probabilities, cell_lat, cell_lon, cell=top, scale_km=settings.conf_scale_km,
                                 cell_xyz=cell_xyz)
    localizable = density > settings.conf_thres
    cells = [int(c) for c in order[:wanted]]
    name = cell_tokens[top] if cell_tokens else str(top)
    rows, sims = (background.search(embedding, cells, settings.top_k) if background is not None
                  else (np.zeros(0, dtype=np.int64), np.zeros(0)))
    if rows.size == 0:
        why = ("this bundle has no background collection" if background is None
               else f"the background collection holds no photo in cell {name}")
        return Refinement(float(cell_lat[top]), float(cell_lon[top]), density, localizable, False, 0, 0,
                          f"classifier's estimate kept: {why}")
    points = np.asarray(background.coords[np.sort(rows)], dtype=np.float64)
    sims_sorted = sims[np.argsort(rows)]
    cluster = densest_cluster_medoid(points[:, 0], points[:, 1], eps_km=settings.eps_km,
                                     min_samples=settings.min_samples, similarities=sims_sorted)
    where = f"cell {name}" if len(cells) == 1 else f"the top {len(cells)} cells"
    return Refinement(cluster.lat, cluster.lon, density, localizable, True, int(rows.size), cluster.size,
                      f"medoid of the densest cluster ({cluster.size} of {rows.size} nearest background photos "
                      f"within {settings.eps_km:g} km) in {where}")

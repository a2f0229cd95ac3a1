"""The hierarchical prediction f*: each fine cell's probability times those of its parent cells, for a batch.

p*(c) = p_fine(c) * p_middle(parent_middle(c)) * p_coarse(parent_coarse(c)) for any number of nested
partitionings; the estimate is the mean coordinate of argmax p*. Confidence is the share of the (renormalised)
f* mass that lies on fine cells within 25 km of the estimate.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .geodesy import EARTH_RADIUS_KM
from .partitions import Partitioning, parent_matrix

CONFIDENCE_RADIUS_KM = 25.0


def hierarchical_probabilities(probabilities: list[torch.Tensor], parents: torch.Tensor) -> torch.Tensor:
    """f* scores [N, n_fine] from per-partitioning probabilities (coarse -> fine, each [N, n_p]).

    `parents` is the [n_fine, P] index matrix of `parent_matrix`; its last column is the fine cell itself. The
    plain product, not renormalised, as in the paper.
    """
    if len(probabilities) != parents.shape[1]:
        raise ValueError(f"{len(probabilities)} probability vectors for a {parents.shape[1]}-level hierarchy")
    scores = probabilities[-1][:, parents[:, -1]]
    for level in range(len(probabilities) - 1):
        scores = scores * probabilities[level][:, parents[:, level]]
    return scores


def _great_circle_km_torch(lat1, lon1, lat2, lon2) -> torch.Tensor:
    phi1, phi2 = torch.deg2rad(lat1), torch.deg2rad(lat2)
    dphi = phi2 - phi1
    dlam = torch.deg2rad(lon2 - lon1)
    a = torch.sin(dphi / 2) ** 2 + torch.cos(phi1) * torch.cos(phi2) * torch.sin(dlam / 2) ** 2
    return 2 * EARTH_RADIUS_KM * torch.asin(torch.sqrt(a.clamp(0.0, 1.0)))


@dataclass
class HierarchyOutput:
    """Batched decoding of one forward pass. Index tensors are on the CPU, probabilities float32."""

    probabilities: list[torch.Tensor]  # per partitioning [N, n_p]
    hierarchy: torch.Tensor  # f* renormalised over fine cells, [N, n_fine]
    argmax: list[torch.Tensor]  # per partitioning [N]
    hierarchy_argmax: torch.Tensor  # [N] fine-cell index
    top_values: list[torch.Tensor]  # per partitioning then hierarchy: [N, k]
    top_indices: list[torch.Tensor]
    confidence: torch.Tensor  # [N]


class Hierarchy:
    """The nested partitionings of a model (coarse -> fine) with their parent matrix and fine-cell coordinates."""

    def __init__(self, partitionings: list[Partitioning], parents: np.ndarray | None = None):
        self.partitionings = list(partitionings)
        if parents is None:
            parents = parent_matrix(self.partitionings) if len(self.partitionings) > 1 else \
                np.arange(len(self.partitionings[0]))[:, None]
        self.parents = torch.as_tensor(np.asarray(parents), dtype=torch.long)
        fine = self.partitionings[-1]
        self.fine_lat = torch.as_tensor(fine.lat, dtype=torch.float64)
        self.fine_lon = torch.as_tensor(fine.lon, dtype=torch.float64)

    def decode(self, probabilities: list[torch.Tensor], *, top_k: int = 10) -> HierarchyOutput:
        """Everything a prediction shows, for a batch of aggregated per-partitioning probabilities."""
        probabilities = [p.detach().float().cpu() for p in probabilities]
        scores = hierarchical_probabilities(probabilities, self.parents)
        total = scores.sum(dim=1, keepdim=True)
        # A product of tiny probabilities can underflow to 0 everywhere; fall back to the fine head then.
        degenerate = total.squeeze(1) <= 0
        if degenerate.any():
            scores[degenerate] = probabilities[-1][degenerate][:, self.parents[:, -1]]
            total = scores.sum(dim=1, keepdim=True)
        hierarchy = scores / total
        hierarchy_argmax = hierarchy.argmax(dim=1)
        top_values, top_indices = [], []
        for p in probabilities + [hierarchy]:
            values, indices = torch.topk(p, min(top_k, p.shape[1]), dim=1)
            top_values.append(values)
            top_indices.append(indices)
        return HierarchyOutput(
            probabilities=probabilities, hierarchy=hierarchy, argmax=[p.argmax(dim=1) for p in probabilities],
            hierarchy_argmax=hierarchy_argmax, top_values=top_values, top_indices=top_indices,
            confidence=self.confidence(hierarchy, hierarchy_argmax))

    def confidence(self, hierarchy: torch.Tensor, estimate: torch.Tensor,
                   radius_km: float = CONFIDENCE_RADIUS_KM) -> torch.Tensor:
        """Probability mass of fine cells whose mean coordinate lies within `radius_km` of the estimate's."""
        lat = self.fine_lat[estimate][:, None]
        lon = self.fine_lon[estimate][:, None]
        distance = _great_circle_km_torch(lat, lon, self.fine_lat[None, :], self.fine_lon[None, :])
        return (hierarchy.double() * (distance <= radius_km)).sum(dim=1).float().clamp(0.0, 1.0)

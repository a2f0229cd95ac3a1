"""Individual scene networks, ISN(M, f*, S3): a Places365 scene classifier routes each photo to the geolocation
network of its most probable S3 concept (indoor, natural, urban). A bundle may instead hold one base(M) network,
which then answers every photo.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .network import GeoNetwork
from .prediction import S3_CONCEPTS

BASE = "base"


class SceneClassifier(nn.Module):
    """Places365 network (365-way head) plus the 365 -> S3 mapping matrix (row-stochastic, [365, 3])."""

    def __init__(self, network: GeoNetwork, labels: list[str], s3_matrix: np.ndarray):
        super().__init__()
        s3_matrix = np.asarray(s3_matrix, dtype=np.float32)
        if network.num_classes != [len(labels)] or s3_matrix.shape != (len(labels), len(S3_CONCEPTS)):
            raise ValueError(f"scene classifier: {network.num_classes} outputs, {len(labels)} labels and a "
                             f"{s3_matrix.shape} mapping do not agree")
        self.network = network
        self.labels = list(labels)
        self.register_buffer("s3_matrix", torch.from_numpy(s3_matrix))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(Places365 probabilities [N, 365], S3 probabilities [N, 3]) in float32."""
        p365 = torch.softmax(self.network(x)[0].float(), dim=1)
        return p365, p365 @ self.s3_matrix


class ISN(nn.Module):
    """One GeoNetwork per S3 concept (or a single "base" network); `forward` routes rows by concept."""

    def __init__(self, networks: dict[str, GeoNetwork]):
        super().__init__()
        if set(networks) == {BASE}:
            self.concepts: tuple[str, ...] = (BASE,)
        elif set(networks) == set(S3_CONCEPTS):
            self.concepts = S3_CONCEPTS
        else:
            raise ValueError(f"an ISN needs networks for {S3_CONCEPTS} or one {BASE!r} network, "
                             f"not {sorted(networks)}")
        shapes = {(n.backbone, tuple(n.num_classes)) for n in networks.values()}
        if len(shapes) != 1:
            raise ValueError(f"all scene networks must share backbone and partitionings, got {sorted(shapes)}")
        self.networks = nn.ModuleDict({c: networks[c] for c in self.concepts})

    @property
    def routed(self) -> bool:
        return self.concepts != (BASE,)

    @property
    def num_classes(self) -> list[int]:
        return next(iter(self.networks.values())).num_classes

    def network_for(self, concept_index: int) -> GeoNetwork:
        return self.networks[self.concepts[concept_index] if self.routed else BASE]

    def forward(self, x: torch.Tensor, concepts: torch.Tensor,
                run=None) -> list[torch.Tensor]:
        """Logits per partitioning for rows `x` [R, 3, s, s], row r answered by the network of `concepts[r]`.

        `run(network, x)` may replace the plain call (the engine uses it for compiled, padded batches).
        """
        run = run or (lambda network, inputs: network(inputs))
        if not self.routed:
            return [t.float() for t in run(self.networks[BASE], x)]
        outputs: list[torch.Tensor] | None = None
        for c, concept in enumerate(self.concepts):
            rows = (concepts == c).nonzero(as_tuple=True)[0]
            if rows.numel() == 0:
                continue
            logits = run(self.networks[concept], x.index_select(0, rows))
            if outputs is None:
                outputs = [torch.empty((x.shape[0], t.shape[1]), dtype=torch.float32, device=t.device)
                           for t in logits]
            for out, t in zip(outputs, logits):
                out.index_copy_(0, rows, t.float())
        assert outputs is not None, "empty batch"
        return outputs

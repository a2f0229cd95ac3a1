"""A loaded geolocation model: scene classifier, scene networks (or one base network), partitionings, hierarchy.

`GeoModel.infer` is one batched forward pass from prepared crops to aggregated per-partitioning probabilities;
the engine turns its output into `Prediction`s.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from .hierarchy import Hierarchy
from .isn import ISN, SceneClassifier
from .partitions import Partitioning
from .preprocess import CropSpec, aggregate_crops


@dataclass
class ModelOutput:
    p365: torch.Tensor  # [N, 365]
    s3: torch.Tensor  # [N, 3]
    concepts: torch.Tensor  # [N] index into S3_CONCEPTS (the ISN that answered)
    probabilities: list[torch.Tensor]  # per partitioning, crops aggregated, [N, n_p]


@dataclass(eq=False)
class GeoModel:
    name: str
    untrained: bool
    partitionings: list[Partitioning]  # coarse -> fine
    config: dict
    isn: ISN
    scene: SceneClassifier
    hierarchy: Hierarchy
    crops: CropSpec
    model_card: str = ""
    path: Path | None = None
    scene_mapping: object = None  # predictor.ml.scenes.SceneMapping (category names for saving)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def scene_untrained(self) -> bool:
        """The scene classifier has random weights (so has the ISN routing), even if the geo networks are trained."""
        return self.untrained or bool((self.config.get("scene") or {}).get("untrained", False))

    @property
    def partitioning_names(self) -> list[str]:
        return [p.name for p in self.partitionings]

    def to(self, device: str | torch.device) -> "GeoModel":
        self.device = torch.device(device)
        self.isn.to(self.device).eval()
        self.scene.to(self.device).eval()
        return self

    @torch.inference_mode()
    def infer(self, crops: torch.Tensor, scene_inputs: torch.Tensor, *, run=None) -> ModelOutput:
        """crops [N * k, 3, s, s] (k crops per photo, photo-major) and scene inputs [N, 3, S, S] on the device."""
        k = self.crops.num_crops
        if crops.shape[0] != scene_inputs.shape[0] * k:
            raise ValueError(f"{crops.shape[0]} crops for {scene_inputs.shape[0]} photos with {k} crops each")
        run = run or (lambda network, x: network(x))
        p365 = torch.softmax(run(self.scene.network, scene_inputs)[0].float(), dim=1)
        with torch.autocast(device_type=p365.device.type, enabled=False):  # keep S3 in float32 under autocast
            s3 = p365 @ self.scene.s3_matrix
        concepts = s3.argmax(dim=1)
        logits = self.isn(crops, concepts.repeat_interleave(k), run=run)
        probabilities = [aggregate_crops(torch.softmax(t, dim=1), k, self.crops.aggregation) for t in logits]
        return ModelOutput(p365=p365, s3=s3, concepts=concepts, probabilities=probabilities)

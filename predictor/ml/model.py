"""What a loaded model is, whatever its kind: the `GeoModel` protocol the engine serves, the optional capabilities a
kind may add, and `ModelOutput`, one batched forward pass.

A kind (ISN, GeoCLIP, ...) is a module that builds a class with these members from a bundle (see
`predictor.ml.kinds`). Capabilities are separate protocols: a model offers one by having its members, and the
engine, the upload stream and the commands ask with `offers(model, Capability)` instead of testing types. A kind
without activation maps simply lacks `activation_maps`; whoever wanted maps then says there are none.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from .hierarchy import Hierarchy, HierarchyOutput
from .partitions import Partitioning
from .prediction import Refined
from .preprocess import CropGeometry, CropSpec

# The two inputs the engine prepares for every photo (predictor.ml.preprocess): the test-time crops, k per photo,
# and the whole photo resized to a square.
CROP_INPUT = "crops"
PHOTO_INPUT = "whole photo"

# The name of a semantic segmentation in ModelOutput.overlays / Prediction.overlays ([H, W] class indices over the
# whole photo; the bundle's config.json "segmentation" entry says how many classes): streamed as its own event.
SEGMENTATION_OVERLAY = "segmentation"

Runner = Callable[[nn.Module, torch.Tensor], list[torch.Tensor]]


@dataclass
class ModelOutput:
    """One batched forward pass over N photos. Tensors stay on the model's device."""

    s3: torch.Tensor  # [N, 3] probabilities of S3_CONCEPTS: the scene the safeguards (indoor coarsening) read
    concepts: torch.Tensor  # [N] index into S3_CONCEPTS (for ISNs: the network that answered)
    probabilities: list[torch.Tensor]  # per partitioning, coarse -> fine, crops aggregated, [N, n_p]
    # [N, len(model.scene_labels)] for models that offer SceneCategories, else None.
    scene_probabilities: torch.Tensor | None = None
    # The model's own answer when it is not the f* cell's mean coordinate (e.g. GeoCLIP's best gallery point):
    # [N, 2] (lat, lon), with its confidence [N] in 0..1. None: the engine answers with f*.
    estimate: torch.Tensor | None = None
    estimate_confidence: torch.Tensor | None = None
    # More named answers [N, 2] (lat, lon), shown beside each partitioning's argmax (Prediction.argmax).
    points: dict[str, torch.Tensor] = field(default_factory=dict)
    # Named per-photo maps [N, H, W] over the whole photo (the PHOTO_INPUT square, to be stretched back to the
    # photo's aspect ratio), e.g. a semantic segmentation the model computed: copied into Prediction.overlays.
    overlays: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass(frozen=True)
class ServedNetwork:
    """A module the engine may compile and pad to batch buckets, and which input it runs on (CROP_INPUT: k rows per
    photo; PHOTO_INPUT: one). `GeoModel.infer` must call it through `run` so the compiled module is used."""

    module: nn.Module
    input: str


@runtime_checkable
class GeoModel(Protocol):
    """What every loaded model offers: its cells, its input, and one batched forward pass."""

    kind: str  # the registry name of its kind (predictor.ml.kinds)
    name: str
    untrained: bool  # random weights: every page that shows its answers says so
    # The scene it reports (ModelOutput.s3, and for ISNs the routing) comes from random weights, even where the
    # geolocation weights are trained: predictions, `predict` and the analysis page then say so.
    scene_untrained: bool
    partitionings: list[Partitioning]  # coarse -> fine
    hierarchy: Hierarchy
    crops: CropSpec
    config: dict  # the bundle's config.json
    model_card: str
    path: Path | None
    device: torch.device

    @property
    def partitioning_names(self) -> list[str]: ...

    def to(self, device: str | torch.device) -> "GeoModel":
        """Move to `device` in eval mode; returns the model."""

    def served_networks(self) -> list[ServedNetwork]:
        """Every network `infer` runs, with its input (for compiling, padding and channels_last)."""

    def infer(self, crops: torch.Tensor, scene_inputs: torch.Tensor, *, run: Runner | None = None) -> ModelOutput:
        """crops [N * k, 3, s, s] (k = crops.num_crops per photo, photo-major) and whole photos [N, 3, S, S], both
        ImageNet-normalised on the device. `run(network, x)` replaces calling a served network directly."""


# --- optional capabilities ----------------------------------------------------------------------------------------


@runtime_checkable
class SceneCategories(Protocol):
    """The model names the scene beyond S3 (Places365's 365 categories for ISN and GeoCLIP bundles, a scene head's
    own classes for others): `ModelOutput.scene_probabilities` is over these labels."""

    scene_labels: list[str]


@runtime_checkable
class ActivationMaps(Protocol):
    """Class activation maps: for any cell, where in the photo the evidence for it lies."""

    def activation_maps(self, crops: torch.Tensor, *, concept: int, cells: list[tuple[str, int]],
                        geometry: CropGeometry) -> list[np.ndarray]:
        """One photo's crops [k, 3, s, s], the concept that answered it, (partitioning name, class index) pairs ->
        one float32 map in 0..1 per pair, over the resized photo (geometry.resized_height x resized_width)."""


@runtime_checkable
class AttentionMaps(Protocol):
    """One "where the model looked" map per photo (e.g. attention rollout), the same for every cell."""

    def attention_map(self, crops: torch.Tensor, *, geometry: CropGeometry) -> np.ndarray:
        """One photo's crops [k, 3, s, s] -> a float32 map in 0..1 over the resized photo."""


@runtime_checkable
class RetrievalRefinement(Protocol):
    """After the cells are decoded, the model refines the answer (e.g. by searching a background collection inside
    the most probable cells). The engine makes a refined answer the prediction's estimate."""

    def refine(self, output: ModelOutput, decoded: HierarchyOutput) -> list[Refined | None]:
        """One entry per photo of the batch; None where nothing could be refined (the f* estimate stands)."""


@runtime_checkable
class PlacesSceneClassifier(Protocol):
    """The bundle carries a Places365 scene classifier that can be reused on its own (`label_scenes`, copying it
    into a new bundle)."""

    scene: nn.Module  # predictor.ml.isn.SceneClassifier
    scene_mapping: object  # predictor.ml.scenes.SceneMapping


class MissingCapability(ValueError):
    """Something was asked of a model that its kind does not offer."""


# --- kinds --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelKind:
    """How bundles of one kind are checked and loaded. Each kind's module defines one; `predictor.ml.kinds` maps
    config.json's "kind" to it. Every function raises `predictor.ml.bundle.BundleError` with a clear message."""

    name: str
    # (bundle directory, config) -> the files its config names, each of which must be checksummed; checks the
    # kind's own keys and that they agree (e.g. head sizes with the partitionings).
    validate: Callable[[Path, dict], list[str]]
    # (bundle directory, config) -> None: every weight file has the tensors and shapes the kind needs (headers only).
    check_weights: Callable[[Path, dict], None]
    # (verified bundle directory, config) -> the model, on the CPU.
    load: Callable[[Path, dict], GeoModel]
    # config -> one line about this bundle (backbone, routing, cells) for `manage.py models`.
    summary: Callable[[dict], str] = lambda config: ""


def offers(model: object, capability: type) -> bool:
    """Whether `model` has the members of the capability protocol (e.g. `offers(model, ActivationMaps)`)."""
    return isinstance(model, capability)


def offers_maps(model: object) -> bool:
    """Whether the model gives a "where it looked" map per photo: activation maps or attention maps."""
    return offers(model, ActivationMaps) or offers(model, AttentionMaps)


CAPABILITIES = (SceneCategories, ActivationMaps, AttentionMaps, RetrievalRefinement, PlacesSceneClassifier)

"""What the predictor answers for one photo: scene, top cells per partitioning, the estimate and its confidence.

This is the contract between the model code (bundles, engine) and everything that shows results (worker,
websocket events, commands, the game). It is plain data and turns into JSON with `to_dict`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

S3_CONCEPTS = ("indoor", "natural", "urban")
HIERARCHY = "hierarchy"


@dataclass
class CellProbability:
    partitioning: str  # "coarse", "middle", "fine" (bundle's names) or "hierarchy" for f*
    class_index: int
    token: str  # S2 cell token
    probability: float
    lat: float  # the cell's mean training coordinate: what is predicted when this cell wins
    lon: float


@dataclass
class SceneResult:
    s3: dict[str, float]  # {"indoor": p, "natural": p, "urban": p}, sums to 1
    concept: str  # argmax of s3: the ISN that answered
    places365_top: list[tuple[str, float]]  # top-5 Places365 categories with probabilities


@dataclass
class Prediction:
    model_name: str
    untrained: bool  # True for random-weight bundles: the UI must say so
    scene: SceneResult
    top_cells: dict[str, list[CellProbability]]  # per partitioning name and HIERARCHY, best first
    argmax: dict[str, tuple[float, float]]  # (lat, lon) of each partitioning's own argmax and of HIERARCHY
    lat: float  # the estimate: the winning f* cell's mean coordinate
    lon: float
    confidence: float  # probability mass within 25 km of the estimate (prediction density), 0..1
    timings_ms: dict[str, float] = field(default_factory=dict)
    scene_untrained: bool = False  # the scene classifier has random weights: scene and ISN routing are meaningless
    cam: np.ndarray | None = field(default=None, repr=False)  # HxW float32 in 0..1 over the input image
    # CAMs of the top cells when asked for: (partitioning name, class index) -> HxW like `cam`. Cells of HIERARCHY
    # are cells of the finest partitioning and use its key.
    cell_cams: dict[tuple[str, int], np.ndarray] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict:
        data = asdict(self)
        data.pop("cam")
        data.pop("cell_cams")
        data["argmax"] = {k: [float(v[0]), float(v[1])] for k, v in self.argmax.items()}
        data["scene"]["places365_top"] = [[label, float(p)] for label, p in self.scene.places365_top]
        return data

"""What the predictor answers for one photo: scene, top cells per partitioning, the estimate and its confidence.

This is the contract between the model code (bundles, engine) and everything that shows results (worker,
websocket events, commands, the game). It is plain data and turns into JSON with `to_dict`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

S3_CONCEPTS = ("indoor", "natural", "urban")
HIERARCHY = "hierarchy"
# What `Prediction.cam` shows: the activation map of the estimate's cell, or where the model looked (one map for
# the photo, whatever the cell).
CELL_MAP = "cell"
ATTENTION_MAP = "attention"


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
    # Top-5 named scene categories with probabilities: Places365's for ISN and GeoCLIP bundles; empty for a model
    # that names none (model.SceneCategories).
    places365_top: list[tuple[str, float]]


@dataclass
class Refined:
    """An answer refined after the cells were decoded (e.g. retrieval inside the most probable cells)."""

    lat: float
    lon: float
    score: float  # how much the refinement can be trusted, 0..1 (e.g. the neighbours' prediction density)
    localizable: bool  # False: the model itself advises against trusting any fine answer for this photo
    note: str = ""  # what was done, or why the classifier's answer was kept


@dataclass
class Prediction:
    model_name: str
    untrained: bool  # True for random-weight bundles: the UI must say so
    scene: SceneResult
    top_cells: dict[str, list[CellProbability]]  # per partitioning name and HIERARCHY, best first
    argmax: dict[str, tuple[float, float]]  # (lat, lon) of each partitioning's own argmax and of HIERARCHY
    # The estimate: the winning f* cell's mean coordinate, or the model's own answer (a GeoCLIP gallery point, a
    # refined one); games and evaluation score this.
    lat: float
    lon: float
    confidence: float  # probability mass within 25 km of the estimate (prediction density), 0..1
    timings_ms: dict[str, float] = field(default_factory=dict)
    scene_untrained: bool = False  # the scene classifier has random weights: scene and ISN routing are meaningless
    cam: np.ndarray | None = field(default=None, repr=False)  # HxW float32 in 0..1 over the input image
    cam_kind: str | None = None  # CELL_MAP or ATTENTION_MAP when `cam` is set
    refined: Refined | None = None  # set by models that refine their answer; lat/lon are then its lat/lon
    # CAMs of the top cells when asked for: (partitioning name, class index) -> HxW like `cam`. Cells of HIERARCHY
    # are cells of the finest partitioning and use its key.
    cell_cams: dict[tuple[str, int], np.ndarray] = field(default_factory=dict, repr=False)
    # Named maps over the whole photo from the model's forward pass (ModelOutput.overlays), e.g. a segmentation.
    overlays: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict:
        data = asdict(self)
        for name in ("cam", "cell_cams", "overlays"):
            data.pop(name)
        data["argmax"] = {k: [float(v[0]), float(v[1])] for k, v in self.argmax.items()}
        data["scene"]["places365_top"] = [[label, float(p)] for label, p in self.scene.places365_top]
        return data

"""Which inference engine serves a loaded model: ISN bundles use `InferenceEngine` as is; GeoCLIP bundles a subclass
whose estimate is GeoCLIP's own answer (the most probable gallery coordinate) and which has no activation maps.
"""
from __future__ import annotations

from .engine import InferenceEngine
from .geoclip import GeoCLIPModel
from .prediction import Prediction

GALLERY = "gallery"


class GeoCLIPEngine(InferenceEngine):
    """Same batching, devices and Prediction shape; `argmax["gallery"]` and the estimate are the best gallery point."""

    def _prediction(self, row, output, decoded) -> Prediction:
        prediction = super()._prediction(row, output, decoded)
        best = int(output.gallery_best[row])
        lat, lon = (float(v) for v in self.model.gallery[best].tolist())
        prediction.argmax[GALLERY] = (lat, lon)
        prediction.lat, prediction.lon = lat, lon
        prediction.confidence = float(output.gallery_confidence[row])
        return prediction

    def _add_cams(self, *args, **kwargs) -> None:
        """A CLIP vision transformer has no class activation maps: `cam` stays None."""


def make_engine(model, **kwargs) -> InferenceEngine:
    """The engine for a model from `load_bundle` (keyword arguments as for `InferenceEngine`)."""
    engine_class = GeoCLIPEngine if isinstance(model, GeoCLIPModel) else InferenceEngine
    return engine_class(model, **kwargs)

"""The process-wide inference engine on the active model bundle, loaded once and shared by the worker threads."""
from __future__ import annotations

import os
import threading
from pathlib import Path

from django.conf import settings

from predictor.ml.engine import InferenceEngine
from predictor.ml.kinds import load_bundle

ENGINE_TOP_K = 100

_lock = threading.Lock()
_engine = None
_engine_model = None
_engine_path: Path | None = None


def _forget_engine_in_forked_child() -> None:
    # A forked process (a server that forks its workers, a test's live server) inherits the parent's engine object
    # but not its batching thread: requests queued on it would wait forever. The child builds its own on first use.
    global _lock, _engine, _engine_model, _engine_path
    _lock = threading.Lock()
    _engine = _engine_model = _engine_path = None


os.register_at_fork(after_in_child=_forget_engine_in_forked_child)


class NoActiveModel(RuntimeError):
    """No model bundle is installed and active; `manage.py ensure_demo_model` or `install_model` fixes it."""


def inference_device() -> str:
    """settings.INFERENCE_DEVICE resolved: "auto" means CUDA when present, else CPU."""
    device = settings.INFERENCE_DEVICE
    if device == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def get_engine():
    """The engine on the active bundle; reloaded when the active bundle changed since it was built."""
    global _engine, _engine_model, _engine_path
    from predictor import registry

    path = registry.active_bundle_path()
    if path is None:
        raise NoActiveModel("No model is installed. Run `manage.py ensure_demo_model` or `manage.py install_model`.")
    with _lock:
        if _engine is None or _engine_path != Path(path):
            device = inference_device()
            model = load_bundle(path, device=device)
            # The heat map shows up to this many cells per partitioning; the engine's default ten is too few.
            engine = InferenceEngine(model, device=device, max_batch_size=settings.ENGINE_MAX_BATCH,
                                     max_wait_ms=settings.ENGINE_MAX_WAIT_MS, top_k=ENGINE_TOP_K,
                                     compile=settings.ENGINE_COMPILE)
            if _engine is not None:
                _engine.close()
            _engine, _engine_model, _engine_path = engine, model, Path(path)
        return _engine


def get_model():
    """The model behind `get_engine()` (a `predictor.ml.model.GeoModel`: name, untrained flag, partitionings)."""
    get_engine()
    return _engine_model


def reset_engine() -> None:
    """Close the engine (tests, or after installing a new bundle in this process)."""
    global _engine, _engine_model, _engine_path
    with _lock:
        if _engine is not None:
            _engine.close()
        _engine = _engine_model = _engine_path = None

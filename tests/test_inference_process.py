"""The process-wide inference engine (predictor/inference.py): built from the settings, and never inherited across a
fork: a forked process (a pre-forking server, the tests' live server) that used its parent's engine would queue
requests on an object whose batching thread did not survive the fork, and never be answered."""
from __future__ import annotations

import os

from predictor import inference


def test_a_forked_child_builds_its_own_engine(monkeypatch):
    parents_engine = object()
    monkeypatch.setattr(inference, "_engine", parents_engine)
    monkeypatch.setattr(inference, "_engine_path", "/models/some-bundle")
    pid = os.fork()
    if pid == 0:  # the child reports through its exit status only
        os._exit(0 if inference._engine is None and inference._engine_path is None else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert inference._engine is parents_engine  # the parent keeps its own


def test_the_engine_settings_reach_the_engine(settings, tiny_bundle, monkeypatch):
    from predictor import registry

    made = {}

    def spy(model, **kwargs):
        made.update(kwargs)
        return real(model, **kwargs)

    real = inference.InferenceEngine
    monkeypatch.setattr(inference, "InferenceEngine", spy)
    settings.ENGINE_MAX_BATCH, settings.ENGINE_MAX_WAIT_MS, settings.ENGINE_COMPILE = 7, 3, False
    registry.install_bundle(tiny_bundle)
    inference.reset_engine()
    try:
        inference.get_engine()
    finally:
        inference.reset_engine()
    assert made["max_batch_size"] == 7 and made["max_wait_ms"] == 3 and made["compile"] is False

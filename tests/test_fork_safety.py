"""A forked process (a pre-forking server, the tests' live server) must not use the engine of its parent: the engine's
batching thread does not survive the fork, so requests queued on the inherited object would never be answered."""
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

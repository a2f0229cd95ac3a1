"""Kinds of background job: another app registers a handler for its kind, and the inference workers run it.

The workers (`manage.py run_worker`, or the embedded worker's child process) claim these jobs with the same
claim / heartbeat / re-queue / attempt limit as upload analyses (predictor/services/jobs.py), so a job never runs in
a web process and a job whose worker dies is taken up again. Predictor knows no kind itself: games registers its
guess recompute in `GamesConfig.ready`, which runs in every process, so a worker knows every kind.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol


class JobFailed(Exception):
    """Raised by a handler to fail its job with a message for staff (no traceback is logged)."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class JobLost(Exception):
    """The job was re-queued or given up while this worker ran it (its heartbeat was too late): stop working on it."""


class JobContext(Protocol):
    def between_batches(self) -> None:
        """Call between two batches of work: the worker runs queued upload analyses first (a long job does not hold
        them up) and raises `JobLost` if the job is no longer this worker's."""


@dataclass(frozen=True)
class JobKind:
    name: str
    # Runs the job to its end in a worker process; returns a line for the log. Raises JobFailed to fail it.
    run: Callable[[dict, JobContext], str]
    # Told when the job goes back to the queue (its worker died) and when it ends failed (an error, or interrupted
    # WORKER_MAX_ATTEMPTS times), so the app's own record shows it.
    on_requeued: Callable[[dict], Any] | None = None
    on_failed: Callable[[dict, str], Any] | None = None


_kinds: dict[str, JobKind] = {}


def register(name: str, *, run: Callable[[dict, JobContext], str], on_requeued: Callable[[dict], Any] | None = None,
             on_failed: Callable[[dict, str], Any] | None = None) -> JobKind:
    """Register (or replace, as a reloaded app does) the handler of a kind of job."""
    kind = JobKind(name=name, run=run, on_requeued=on_requeued, on_failed=on_failed)
    _kinds[name] = kind
    return kind


def get_kind(name: str) -> JobKind:
    try:
        return _kinds[name]
    except KeyError:
        raise LookupError(f"no handler is registered for jobs of kind {name!r} "
                          f"(registered: {', '.join(sorted(_kinds)) or 'none'})") from None


def registered() -> list[str]:
    return sorted(_kinds)

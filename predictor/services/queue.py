"""The analysis queue: claim queued analyses for a worker, keep the claims alive, re-queue the jobs of dead workers."""
from __future__ import annotations

import logging
import threading
import uuid

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from predictor.models import Analysis
from predictor.services.errors import AnalysisGone
from predictor.services.streaming import fail_analysis

logger = logging.getLogger(__name__)

# Set when an analysis (or a background job) is queued, so that a worker waiting in this process starts at once.
analysis_created = threading.Event()
# On PostgreSQL the same news reaches workers in other processes (`run_worker`): NOTIFY on this channel, heard by each
# worker's listener (predictor.worker.QueueListener).
NOTIFY_CHANNEL = "geoweb_queue"


def jobs_queued() -> None:
    """Wake the workers: call it where rows were just queued, inside their transaction if there is one. This
    process's workers are woken once it commits; on PostgreSQL every listening worker too (NOTIFY is delivered on
    commit, and not at all on rollback). Elsewhere a worker in another process finds the rows on its next poll."""
    transaction.on_commit(analysis_created.set)
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(f"NOTIFY {NOTIFY_CHANNEL}")


def claim_analyses(*, worker_id: str, limit: int) -> list[Analysis]:
    """Atomically take up to `limit` queued analyses, oldest first, for `worker_id`; each goes to one worker only.

    An analysis whose earlier run was cut off (its worker died or went silent) is taken on its own, before the
    others: if its photo is what stopped the worker, it cannot take a batch of other people's photos with it again.
    """
    queued = Analysis.objects.filter(status=Analysis.Status.QUEUED)
    claimed = claim_rows(queued.filter(attempts__gt=0), worker_id=worker_id, limit=1)
    return claimed or claim_rows(queued.filter(attempts=0), worker_id=worker_id, limit=limit)


def claim_rows(queued, *, worker_id: str, limit: int) -> list:
    """Claim up to `limit` rows of `queued` (analyses or background jobs: any model with the claim fields), oldest
    first, each for one worker only."""
    model = queued.model
    token = uuid.uuid4().hex
    now = timezone.now()
    claim = dict(status=model.Status.RUNNING, worker_id=worker_id, claim_token=token, heartbeat_at=now,
                 started_at=now, attempts=F("attempts") + 1)
    queued = queued.order_by("created_at", "id")
    if connection.features.has_select_for_update_skip_locked:
        with transaction.atomic():
            ids = list(queued.select_for_update(skip_locked=True).values_list("pk", flat=True)[:limit])
            if not ids:
                return []
            model.objects.filter(pk__in=ids).update(**claim)
    else:
        # SQLite has no row locks: the conditional UPDATE is atomic, so a row another worker took first is skipped.
        ids = list(queued.values_list("pk", flat=True)[:limit])
        if not ids:
            return []
        model.objects.filter(pk__in=ids, status=model.Status.QUEUED).update(**claim)
    return list(model.objects.filter(claim_token=token).order_by("created_at", "id"))


def heartbeat(*, analyses: list[Analysis]) -> int:
    """Tell other workers that these claims are alive; returns how many are still held."""
    return Analysis.objects.heartbeat(analyses)


def interrupted_message(attempts: int) -> str:
    return (f"The analysis was interrupted {attempts} times (the inference worker stopped while it worked on this "
            "photo), so it was given up. Please try again later, or with another photo.")


def requeue_stale(*, timeout_s: float) -> int:
    """Give the jobs of workers silent for `timeout_s` back to the queue (or fail them after too many tries)."""
    return _requeue(list(Analysis.objects.silent_for(timeout_s)), why="silent")


def requeue_jobs_of(*, worker_id: str) -> int:
    """Give back the running jobs of a worker known to be dead (the embedded worker's supervisor saw it exit), at
    once rather than after the heartbeat timeout; a job interrupted WORKER_MAX_ATTEMPTS times fails instead."""
    return _requeue(list(Analysis.objects.of_worker(worker_id)), why="dead")


def _requeue(analyses: list[Analysis], *, why: str) -> int:
    count = 0
    for analysis in analyses:
        if analysis.attempts >= settings.WORKER_MAX_ATTEMPTS:
            try:
                fail_analysis(analysis, interrupted_message(analysis.attempts), expected_token=analysis.claim_token)
            except AnalysisGone:
                continue
            logger.error("analysis %s failed: interrupted %d times (last by %s worker %s)", analysis.pk,
                         analysis.attempts, why, analysis.worker_id)
        else:
            # The next worker streams the analysis from the start; the interrupted run's events go, so that the
            # stored result is one complete run. A page that saw some of them already skips their repeats by seq.
            updated = Analysis.objects.held(analysis).update(
                status=Analysis.Status.QUEUED, worker_id="", claim_token="", heartbeat_at=None, stage="",
                result={**(analysis.result or {}), "events": []})
            if not updated:
                continue
            logger.warning("re-queued analysis %s of %s worker %s", analysis.pk, why, analysis.worker_id)
        count += 1
    if count:
        jobs_queued()
    return count

"""Background jobs other than upload analyses (predictor/jobs.py registers their kinds): queue one, claim one for a
worker, keep the claim alive, run it, and give it back when its worker dies, or fail it after WORKER_MAX_ATTEMPTS.

The claim is the analyses' own (`queue.claim_rows`), on the `predictor.Job` table.
"""
from __future__ import annotations

import logging

from django.conf import settings
from django.utils import timezone

from predictor import jobs
from predictor.models import Job
from predictor.services.queue import claim_rows, jobs_queued

logger = logging.getLogger(__name__)


def enqueue_job(*, kind: str, payload: dict) -> Job:
    """Queue a job of a registered kind; a worker runs it (the caller's process never does)."""
    jobs.get_kind(kind)  # a kind nobody handles would wait forever: refuse it now
    job = Job.objects.create(kind=kind, payload=payload)
    jobs_queued()
    return job


def claim_job(*, worker_id: str, job_id: int | None = None) -> Job | None:
    """Claim the oldest queued job (or the queued job `job_id`) for `worker_id`; None if there is none."""
    queued = Job.objects.filter(status=Job.Status.QUEUED)
    if job_id is not None:
        queued = queued.filter(pk=job_id)
    claimed = claim_rows(queued, worker_id=worker_id, limit=1)
    return claimed[0] if claimed else None


def heartbeat_jobs(*, jobs_held: list[Job]) -> int:
    """Tell other workers that these claims are alive; returns how many are still held."""
    return Job.objects.heartbeat(jobs_held)


def still_held(*, job: Job) -> bool:
    return Job.objects.held(job).exists()


def run_job(*, job: Job, context: jobs.JobContext) -> str:
    """Run a claimed job through its kind's handler and store how it ended; returns its final status."""
    try:
        kind = jobs.get_kind(job.kind)
        note = kind.run(dict(job.payload), context)
    except jobs.JobLost:
        logger.warning("job %s (%s) was taken from worker %s while it ran", job.pk, job.kind, job.worker_id)
        return "lost"
    except jobs.JobFailed as error:
        return _fail(job, error.message)
    except Exception as error:  # noqa: BLE001 - every claimed job ends in a state staff can see
        logger.exception("job %s (%s) failed", job.pk, job.kind)
        return _fail(job, f"The job failed: {error!r}")
    ended = Job.objects.held(job).update(status=Job.Status.DONE, finished_at=timezone.now())
    if ended:
        logger.info("job %s (%s) done: %s", job.pk, job.kind, note)
    return Job.Status.DONE if ended else "lost"


def interrupted_job_message(attempts: int) -> str:
    return (f"The job was interrupted {attempts} times (the worker running it stopped), so it was given up.")


def requeue_stale_jobs(*, timeout_s: float) -> int:
    """Give the jobs of workers silent for `timeout_s` back to the queue (or fail them after too many tries)."""
    return _requeue(list(Job.objects.silent_for(timeout_s)), why="silent")


def requeue_background_jobs_of(*, worker_id: str) -> int:
    """Give back at once the running jobs of a worker known to be dead (see `queue.requeue_jobs_of`)."""
    return _requeue(list(Job.objects.of_worker(worker_id)), why="dead")


def _requeue(held: list[Job], *, why: str) -> int:
    count = 0
    for job in held:
        if job.attempts >= settings.WORKER_MAX_ATTEMPTS:
            if _fail(job, interrupted_job_message(job.attempts)) == "lost":
                continue
            logger.error("job %s (%s) failed: interrupted %d times (last by %s worker %s)", job.pk, job.kind,
                         job.attempts, why, job.worker_id)
        else:
            updated = Job.objects.held(job).update(status=Job.Status.QUEUED, worker_id="", claim_token="",
                                                   heartbeat_at=None)
            if not updated:
                continue
            logger.warning("re-queued job %s (%s) of %s worker %s", job.pk, job.kind, why, job.worker_id)
            _tell(job, "on_requeued")
        count += 1
    if count:
        jobs_queued()
    return count


def _fail(job: Job, message: str) -> str:
    failed = Job.objects.held(job).update(status=Job.Status.FAILED, error_message=message,
                                          finished_at=timezone.now())
    if not failed:
        return "lost"
    _tell(job, "on_failed", message)
    return Job.Status.FAILED


def _tell(job: Job, hook: str, *args) -> None:
    try:
        callback = getattr(jobs.get_kind(job.kind), hook)
        if callback is not None:
            callback(dict(job.payload), *args)
    except Exception:  # noqa: BLE001 - the job's own state is stored; the app's record catches up on the next run
        logger.exception("job %s (%s): %s failed", job.pk, job.kind, hook)

"""Upload analysis, the writing side, one module per concern:

- `intake`: accept an upload (kill switch, daily quota), store its clean copy, queue the analysis;
- `retention`: an analysis' stored files, discarded once it ends, deleted with it (the only way analyses go);
- `queue`: claim queued analyses for a worker, heartbeat, re-queue the jobs of dead workers;
- `streaming`: run claimed analyses through the engine, store and publish their events;
- `cams`: the activation maps a user may see, stored as overlay PNGs;
- `jobs`: background jobs of other kinds (predictor/jobs.py), claimed and re-queued like analyses.

The public names are re-exported here, so callers write `services.create_analysis(...)`.
"""
from predictor.services.errors import AnalysisGone, UploadRefused
from predictor.services.intake import create_analysis
from predictor.services.jobs import (
    claim_job, enqueue_job, heartbeat_jobs, requeue_background_jobs_of, requeue_stale_jobs, run_job, still_held,
)
from predictor.services.queue import (
    analysis_created, claim_analyses, heartbeat, interrupted_message, jobs_queued, requeue_jobs_of, requeue_stale,
)
from predictor.services.retention import (
    analysis_files, cell_cam_files, delete_account, delete_all_analyses, delete_analysis, segmentation_file,
)
from predictor.services.streaming import run_analyses

__all__ = [
    "AnalysisGone", "UploadRefused", "analysis_created", "analysis_files", "cell_cam_files", "claim_analyses",
    "claim_job", "create_analysis", "delete_account", "delete_all_analyses", "delete_analysis", "enqueue_job",
    "heartbeat", "heartbeat_jobs", "interrupted_message", "jobs_queued", "requeue_background_jobs_of", "requeue_jobs_of",
    "requeue_stale", "requeue_stale_jobs", "run_analyses", "run_job", "segmentation_file", "still_held",
]

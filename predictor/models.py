"""The upload analysis as stored: one row per photo a user sent, its job state, and the events it produced."""
from __future__ import annotations

import uuid
from datetime import timedelta

from django.conf import settings
from django.db import models
from django.utils import timezone


def _upload_name(kind: str, extension: str) -> str:
    # App-generated names only: nothing of the user's file name reaches the disk.
    return f"analyses/{kind}/{uuid.uuid4().hex}.{extension}"


class JobStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"


class ClaimQuerySet(models.QuerySet):
    """The rows of a claimable table as the worker loop sees them (predictor/services/queue.py, jobs.py)."""

    def running(self):
        return self.filter(status=JobStatus.RUNNING)

    def held(self, row, *, token: str | None = None):
        """`row`, only while its claim (or the claim `token`) still holds it: what a worker may update."""
        return self.running().filter(pk=row.pk, claim_token=row.claim_token if token is None else token)

    def silent_for(self, timeout_s: float):
        """Running rows whose worker has not said it was alive for `timeout_s`."""
        return self.running().filter(heartbeat_at__lt=timezone.now() - timedelta(seconds=timeout_s))

    def of_worker(self, worker_id: str):
        return self.running().filter(worker_id=worker_id)

    def heartbeat(self, rows) -> int:
        """Tell other workers that these rows' claims are alive; returns how many are still held."""
        tokens = {row.claim_token for row in rows}
        return self.running().filter(claim_token__in=tokens).update(heartbeat_at=timezone.now())


class Claimable(models.Model):
    """What the worker loop needs of a row it runs: its state, the worker that holds it, the token of that claim,
    when it last said it was alive, and how many times it was claimed. Analyses and background jobs share it."""

    Status = JobStatus

    status = models.CharField(max_length=10, choices=JobStatus.choices, default=JobStatus.QUEUED)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    worker_id = models.CharField(max_length=120, blank=True)
    claim_token = models.CharField(max_length=32, blank=True, db_index=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)

    objects = ClaimQuerySet.as_manager()

    class Meta:
        abstract = True

    @property
    def is_finished(self) -> bool:
        return self.status in (JobStatus.DONE, JobStatus.FAILED)


class Analysis(Claimable):
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="analyses")
    status = models.CharField(max_length=10, choices=JobStatus.choices, default=JobStatus.QUEUED, db_index=True)
    # The type of the last event stored (scene, partitions, heatmap, estimate, cam, done, error).
    stage = models.CharField(max_length=20, blank=True)
    # {"events": [event payloads in the order they were sent, each with "seq"], "summary": {...}}
    result = models.JSONField(default=dict, blank=True)
    error_message = models.TextField(blank=True)
    model_name = models.CharField(max_length=120, blank=True)
    untrained = models.BooleanField(default=False)

    image = models.FileField(max_length=200, blank=True)  # the re-encoded, metadata-free copy
    thumbnail = models.FileField(max_length=200, blank=True)
    cam = models.FileField(max_length=200, blank=True)  # the activation-map overlay PNG
    original_sha256 = models.CharField(max_length=64, db_index=True)
    original_format = models.CharField(max_length=10, blank=True)
    original_width = models.PositiveIntegerField(default=0)
    original_height = models.PositiveIntegerField(default=0)

    timings = models.JSONField(default=dict, blank=True)  # milliseconds per step
    # Responsible use (docs/responsible-use.md): whether the owner asked to keep the photo after the analysis, the
    # granularity the stored result was limited to, and why it was coarsened below the configured level.
    keep_photo = models.BooleanField(default=False)
    granularity = models.CharField(max_length=10, blank=True)
    coarsening_reason = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "analyses"
        indexes = [models.Index(fields=["status", "created_at"]), models.Index(fields=["owner", "-created_at"])]

    def __str__(self) -> str:
        return f"Analysis {self.pk} of {self.owner_id} ({self.status})"

    @property
    def group_name(self) -> str:
        return f"analysis.{self.pk}"

    @property
    def events(self) -> list[dict]:
        return list(self.result.get("events", []))

    @property
    def summary(self) -> dict:
        return dict(self.result.get("summary", {}))


class TermsAcceptance(models.Model):
    """A user's acceptance of the terms of use for uploads, with when and which version."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="terms_acceptance")
    version = models.CharField(max_length=20)
    accepted_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.user} accepted terms {self.version} at {self.accepted_at:%Y-%m-%d %H:%M}"


class SiteSettings(models.Model):
    """The one row of settings staff change at run time in the admin (OR'ed with the environment settings)."""

    uploads_paused = models.BooleanField(
        default=False, help_text="Pause photo uploads for everyone. Uploads are also off while the "
                                 "GEOWEB_UPLOADS_ENABLED setting is off.")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = verbose_name_plural = "site settings"

    def __str__(self) -> str:
        return "Site settings"

    def save(self, *args, **kwargs):
        self.pk = 1  # a singleton: every save writes the same row
        super().save(*args, **kwargs)

    @classmethod
    def load(cls) -> "SiteSettings":
        return cls.objects.get_or_create(pk=1)[0]


class UploadAudit(models.Model):
    """One row per accepted upload, kept after the analysis and the photo are deleted: who, when, which image (by
    hash), which model, and how precise the answer was allowed to be."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                             related_name="upload_audits")
    username = models.CharField(max_length=150)  # kept when the account is deleted
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    image_sha256 = models.CharField(max_length=64, db_index=True)
    analysis_id = models.BigIntegerField(null=True, blank=True)
    model_name = models.CharField(max_length=120, blank=True)
    granularity = models.CharField(max_length=10, blank=True)
    coarsening_reason = models.CharField(max_length=200, blank=True)
    client_ip = models.GenericIPAddressField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"Upload by {self.username} at {self.created_at:%Y-%m-%d %H:%M}"


class Job(Claimable):
    """A background job other than an upload analysis (a game's guess recompute, say), run by the same workers.

    Another app registers a handler for its `kind` (predictor/jobs.py) and queues jobs through
    `services.enqueue_job`; the job's own progress lives in that app's tables. Claimed, kept alive, re-queued and
    given up like analyses: see predictor/services/jobs.py.
    """

    kind = models.CharField(max_length=60)
    payload = models.JSONField(default=dict, blank=True)
    error_message = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["status", "created_at"])]

    def __str__(self) -> str:
        return f"Job {self.pk} {self.kind} ({self.status})"

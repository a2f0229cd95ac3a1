"""The upload analysis as stored: one row per photo a user sent, its job state, and the events it produced."""
from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models


def _upload_name(kind: str, extension: str) -> str:
    # App-generated names only: nothing of the user's file name reaches the disk.
    return f"analyses/{kind}/{uuid.uuid4().hex}.{extension}"


class Analysis(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="analyses")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED, db_index=True)
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
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    # Claiming: the worker that holds the job, the token of that claim, and when it last said it was alive.
    worker_id = models.CharField(max_length=120, blank=True)
    claim_token = models.CharField(max_length=32, blank=True, db_index=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)

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

    @property
    def is_finished(self) -> bool:
        return self.status in (self.Status.DONE, self.Status.FAILED)

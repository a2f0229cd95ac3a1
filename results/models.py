"""Cached figures of /models/ and /results/ (recomputed by `manage.py recompute_results`, never per request)."""
from __future__ import annotations

from django.db import models


class Snapshot(models.Model):
    """One cached computation: its numbers (JSON), its charts (SVG text by name) and, for the export, a CSV."""

    key = models.CharField(max_length=40, unique=True)
    data = models.JSONField(default=dict)
    charts = models.JSONField(default=dict, help_text="{chart name: SVG text}")
    fingerprint = models.JSONField(default=list, help_text="what the numbers were computed from")
    text = models.TextField(blank=True, help_text="the CSV export (key 'export')")
    seconds = models.FloatField(default=0.0, help_text="how long the computation took")
    computed_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.key} ({self.computed_at:%Y-%m-%d %H:%M})"

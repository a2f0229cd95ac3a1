"""Intake: accept an upload (kill switch, daily quota), store its clean copy and thumbnail, queue the analysis."""
from __future__ import annotations

import json
import math
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import connection
from django.utils import timezone

from core import images
from predictor import policy
from predictor.models import Analysis, UploadAudit
from predictor.services.errors import UploadRefused
from predictor.services.queue import jobs_queued
from predictor.services.retention import new_file_name


def create_analysis(*, owner, data: bytes, keep_photo: bool = False, client_ip: str | None = None) -> Analysis:
    """Check and clean the photo, store the clean copy and a thumbnail, queue the analysis and audit the upload.

    The photo and thumbnail are deleted once the analysis ends unless `keep_photo`.
    Raises `images.RejectedImage` or `UploadRefused`; in both cases nothing is stored.
    """
    if not policy.uploads_enabled():
        raise UploadRefused("Photo analysis is paused at the moment. Please try again later.", status=503)
    quota = settings.UPLOAD_DAILY_QUOTA
    if quota > 0:
        now = timezone.now()
        # Counted from the audit log, so deleting analyses does not give uploads back.
        recent = list(UploadAudit.objects.filter(user=owner, created_at__gte=now - timedelta(days=1))
                      .order_by("created_at").values_list("created_at", flat=True))
        if len(recent) >= quota:
            # The next upload fits once enough of the last day's uploads are more than a day old.
            frees_at = recent[len(recent) - quota] + timedelta(days=1)
            wait_s = max(1, math.ceil((frees_at - now).total_seconds()))
            raise UploadRefused(f"You have analysed {quota} photos in the last 24 hours, the daily limit. "
                                f"Please try again in {_duration(wait_s)}.", status=429, retry_after_s=wait_s)
    _release_pooled_connection()
    clean = images.clean_upload(data)
    stored: list[str] = []
    try:
        image_name = default_storage.save(new_file_name("photo", "jpg"), ContentFile(clean.jpeg))
        stored.append(image_name)
        thumbnail_name = default_storage.save(new_file_name("thumb", "jpg"), ContentFile(clean.thumbnail))
        stored.append(thumbnail_name)
        model_name, untrained = _active_model()
        analysis = Analysis.objects.create(
            owner=owner, image=image_name, thumbnail=thumbnail_name, original_sha256=clean.sha256,
            original_format=clean.source_format, original_width=clean.source_width,
            original_height=clean.source_height, keep_photo=bool(keep_photo),
            # The model that will answer, as far as known now: the page of a queued analysis flags an untrained
            # one from its first message. The worker records the model it actually used.
            model_name=model_name, untrained=untrained,
        )
        UploadAudit.objects.create(user=owner, username=owner.get_username(), image_sha256=clean.sha256,
                                   analysis_id=analysis.pk, client_ip=client_ip or None)
    except BaseException:
        for name in stored:
            default_storage.delete(name)
        raise
    jobs_queued()
    return analysis


def _active_model() -> tuple[str, bool]:
    """Name and untrained flag of the active bundle, from its config file (no weights are loaded)."""
    from predictor import registry
    from predictor.ml.bundle import CONFIG

    path = registry.active_bundle_path()
    if path is None:
        return "", False
    try:
        config = json.loads((Path(path) / CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return path.name, False
    return str(config.get("name") or path.name)[:120], bool(config.get("untrained", False))


def _duration(seconds: int) -> str:
    hours, minutes = divmod(math.ceil(seconds / 60), 60)
    if hours:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    return f"{max(1, minutes)} min"


def _release_pooled_connection() -> None:
    """Give this thread's database connection back to the pool while the photo is checked and re-encoded.

    Cleaning a photo takes tens of milliseconds of CPU (far more when many arrive at once) and needs no database.
    Holding a pooled connection meanwhile lets a burst of uploads take every connection in the pool, and the
    requests queued behind them time out as 503s. Outside a transaction the connection is taken again, from the
    pool, by the next query.
    """
    if getattr(connection, "pool", None) is not None and not connection.in_atomic_block:
        connection.close()

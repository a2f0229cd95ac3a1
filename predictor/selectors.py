"""Upload analysis, the reading side: a user's analyses and what a page must show again after a reload."""
from __future__ import annotations

from django.db.models import QuerySet

from predictor.models import Analysis


def analyses_of(*, user) -> QuerySet[Analysis]:
    """The user's own analyses, newest first; nobody else's, whatever their rights."""
    if not user.is_authenticated:
        return Analysis.objects.none()
    return Analysis.objects.filter(owner=user).order_by("-created_at", "-id")


def analysis_of(*, user, analysis_id: int) -> Analysis | None:
    """The analysis if it exists and belongs to `user`, else None (the caller cannot tell which)."""
    return analyses_of(user=user).filter(pk=analysis_id).first()


def status_message(*, analysis: Analysis) -> dict:
    """The state a (re)connecting page starts from, before the stored events."""
    return {"type": "status", "analysis": analysis.pk, "status": analysis.status, "stage": analysis.stage,
            "model_name": analysis.model_name, "untrained": analysis.untrained,
            "error": analysis.error_message or None}


def stored_events(*, analysis: Analysis, after_seq: int = 0) -> list[dict]:
    """The events already sent for the analysis, in order, from the database."""
    return [event for event in analysis.events if event.get("seq", 0) > after_seq]

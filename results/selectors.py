"""Read side of /models/ and /results/: one cached row per page (results.services computes them)."""
from __future__ import annotations

import datetime as dt

from django.conf import settings
from django.utils import timezone

from results import services
from results.models import Snapshot

CHART_KEYS = {"models": services.MODELS_KEY, "results": services.RESULTS_KEY}


def models_page() -> dict:
    """The /models/ entries (cards, accuracy, chart names), rebuilt first only if the bundles or files changed."""
    snapshot = services.models_snapshot()
    return {**snapshot.data, "computed_at": snapshot.computed_at}


def chart_svg(*, page: str, name: str) -> str | None:
    """A cached chart's SVG text, or None."""
    key = CHART_KEYS.get(page)
    if key is None:
        return None
    # Only that chart's text leaves the database, not every chart of the page.
    svg = Snapshot.objects.filter(key=key).values_list(f"charts__{name}", flat=True).first()
    return svg if isinstance(svg, str) else None


def results_page(*, now: dt.datetime | None = None) -> dict | None:
    """The cached /results/ numbers with their age, or None when they were never computed. When they are older
    than RESULTS_REFRESH_S (0: never) a background recompute is started; this request still gets the cached ones."""
    row = (Snapshot.objects.filter(key=services.RESULTS_KEY)
           .values("data__rounds", "data__photos", "data__people", "computed_at", "seconds", "text").first())
    refresh_s = settings.RESULTS_REFRESH_S
    now = now or timezone.now()
    if refresh_s and (row is None or (now - row["computed_at"]).total_seconds() > refresh_s):
        services.refresh_results_in_background()
    if row is None:
        return None
    return {"rounds": row["data__rounds"], "photos": row["data__photos"], "people": row["data__people"],
            "computed_at": row["computed_at"], "seconds": row["seconds"], "body": row["text"]}


def export_text() -> str | None:
    return Snapshot.objects.filter(key=services.EXPORT_KEY).values_list("text", flat=True).first()

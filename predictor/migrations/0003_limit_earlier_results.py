"""Results stored before answers for uploads were limited held fine cells and the precise estimate; replaying them
would send exactly what the limit is meant to keep back. Their cells are dropped and their coordinates rounded to
whole degrees; the place names (country and region) stay."""
from django.db import migrations

REASON = "Analysed before answers were limited: shown at country level."


def _limit(event: dict) -> dict:
    kind = event.get("type")
    if kind == "partitions":
        return {**event, "partitionings": {}, "granularity": "country"}
    if kind == "heatmap":
        return {**event, "geojson": {"type": "FeatureCollection", "features": []}, "cells": 0,
                "granularity": "country"}
    if kind == "estimate":
        return {**event, "lat": float(round(event.get("lat", 0.0))), "lon": float(round(event.get("lon", 0.0))),
                "candidates": [], "radius_km": max(500.0, float(event.get("radius_km", 0.0))),
                "granularity": "country", "coarsening_reason": REASON}
    return event


def limit_earlier_results(apps, schema_editor):
    Analysis = apps.get_model("predictor", "Analysis")
    for analysis in Analysis.objects.filter(granularity="").iterator():
        result = dict(analysis.result or {})
        result["events"] = [_limit(e) for e in result.get("events", [])]
        summary = dict(result.get("summary", {}))
        for key in ("lat", "lon"):
            if isinstance(summary.get(key), (int, float)):
                summary[key] = float(round(summary[key]))
        if summary:
            result["summary"] = summary
        analysis.result = result
        analysis.granularity = "country"
        analysis.coarsening_reason = REASON
        analysis.save(update_fields=["result", "granularity", "coarsening_reason"])


class Migration(migrations.Migration):
    dependencies = [("predictor", "0002_responsible_use")]

    operations = [migrations.RunPython(limit_earlier_results, migrations.RunPython.noop)]

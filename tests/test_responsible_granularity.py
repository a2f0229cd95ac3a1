"""Granularity of uploads, asserted on the wire: every websocket message (live and replayed) and every page or JSON
response about an upload holds only coarse cells and coarse-cell centres; fine/middle cells and the precise
estimate never appear unless staff are allowed them."""
from __future__ import annotations

import json

import pytest
from channels.db import database_sync_to_async
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from predictor import granularity, inference, registry, worker
from predictor.services import streaming
from predictor.models import Analysis
from predictor.ml.prediction import HIERARCHY
from tests.conftest import make_jpeg
from tests.streaming import open_socket, receive_until


@pytest.fixture
def tiny_model(tiny_bundle, settings):
    settings.EMBEDDED_WORKER = False
    settings.UPLOAD_COARSEN_INDOOR = False  # the random model may call any photo indoor; tested separately
    worker.stop_embedded_worker()
    registry.install_bundle(tiny_bundle)
    yield
    inference.reset_engine()


@pytest.fixture
def captured(monkeypatch):
    """The full predictions the worker saw, to know what must not leak."""
    seen = []
    real = streaming._stream

    def spy(analysis, prediction, **kwargs):
        seen.append(prediction)
        return real(analysis, prediction, **kwargs)

    monkeypatch.setattr(streaming, "_stream", spy)
    return seen


def upload_over_http(user) -> tuple[int, list[str]]:
    client = Client()
    client.force_login(user)
    response = client.post(reverse("analyze"), {"photo": SimpleUploadedFile("p.jpg", make_jpeg(320, 240))},
                           HTTP_ACCEPT="application/json")
    assert response.status_code == 201
    return response.json()["id"], [response.content.decode()]


def pages_of(user, analysis_id: int) -> list[str]:
    client = Client()
    client.force_login(user)
    texts = []
    for url in (reverse("analysis", args=[analysis_id]), reverse("my-analyses")):
        response = client.get(url)
        assert response.status_code == 200
        texts.append(response.content.decode())
    return texts


async def collect(user) -> tuple[int, list[dict], list[str]]:
    """Upload, watch the live stream, reconnect for the replay, and fetch the pages: everything the wire carried."""
    analysis_id, http = await database_sync_to_async(upload_over_http)(user)
    socket = await open_socket(analysis_id, user)
    try:
        await socket.receive_json_from(timeout=5)  # status
        await database_sync_to_async(lambda: worker.Worker(worker_id="w").run_once())()
        live = await receive_until(socket, {"done", "error"})
    finally:
        await socket.disconnect()
    socket = await open_socket(analysis_id, user)
    try:
        replay = await receive_until(socket, {"done", "error"})
    finally:
        await socket.disconnect()
    http += await database_sync_to_async(pages_of)(user, analysis_id)
    return analysis_id, live + replay, http


def walk(value, path=""):
    if isinstance(value, dict):
        for key, item in value.items():
            yield from walk(item, f"{path}.{key}")
        yield path, value
    elif isinstance(value, list):
        for item in value:
            yield from walk(item, path)


def secrets_of(prediction, coarse_tokens: set[str]) -> tuple[set[str], list[str]]:
    """Cell tokens finer than coarse, and textual forms of the precise estimate and the fine cells' coordinates."""
    fine_tokens = {c.token for name, cells in prediction.top_cells.items() if name != "coarse" for c in cells}
    fine_tokens -= coarse_tokens
    precise = [f"{round(prediction.lat, 5)}", f"{round(prediction.lon, 5)}"]
    for cell in prediction.top_cells.get(HIERARCHY, [])[:5]:
        precise += [f"{round(cell.lat, 5)}", f"{round(cell.lon, 5)}"]
    return fine_tokens, [p for p in precise if len(p.split(".")[-1]) >= 4]


def coarse_partitioning():
    return inference.get_model().partitionings[0]


@pytest.mark.django_db(transaction=True)
async def test_region_level_upload_never_sends_fine_cells_or_the_precise_estimate(tiny_model, user, captured):
    analysis_id, messages, pages = await collect(user)
    assert [m["type"] for m in messages if not m.get("replay")] == \
        ["scene", "partitions", "heatmap", "estimate", "cam", "done"]
    coarse = await database_sync_to_async(coarse_partitioning)()
    coarse_tokens = set(coarse.tokens)
    [prediction] = captured
    fine_tokens, precise = secrets_of(prediction, coarse_tokens)
    assert fine_tokens and precise  # the model did produce fine answers: there is something to leak
    wire = [json.dumps(m) for m in messages] + pages
    for text in wire:
        assert not [t for t in fine_tokens if f'"{t}"' in text or f">{t}<" in text]
        assert not [p for p in precise if p in text]
    centres = {granularity.cell_centre(t) for t in coarse_tokens}
    for message in messages:
        for path, node in walk(message):
            if "token" in node and node["token"] is not None:
                assert node["token"] in coarse_tokens, path
            if "lat" in node and "lon" in node:
                assert (node["lat"], node["lon"]) in centres, (path, node)
    partitions = next(m for m in messages if m["type"] == "partitions")
    assert list(partitions["partitionings"]) == [coarse.name]
    estimate = next(m for m in messages if m["type"] == "estimate")
    assert estimate["granularity"] == "region" and len(estimate["candidates"]) == 5
    assert set(estimate["place"]) == {"country", "iso2", "continent", "region", "offshore"}
    stored = await database_sync_to_async(Analysis.objects.get)(pk=analysis_id)
    assert stored.granularity == "region" and (stored.summary["lat"], stored.summary["lon"]) in centres
    assert "Answer limited to region level" in pages[1]


@pytest.mark.django_db(transaction=True)
async def test_staff_see_fine_cells_only_where_the_setting_allows(tiny_model, user, captured, settings):
    user.is_staff = True
    await database_sync_to_async(user.save)()
    _, messages, _ = await collect(user)
    coarse = await database_sync_to_async(coarse_partitioning)()
    assert next(m for m in messages if m["type"] == "estimate")["granularity"] == "region"
    settings.UPLOAD_STAFF_FINE = True
    _, messages, _ = await collect(user)
    fine_tokens, precise = secrets_of(captured[-1], set(coarse.tokens))
    wire = json.dumps(messages)
    # The same checks as above do find the fine answer when it is allowed, so they are able to fail.
    assert any(f'"{t}"' in wire for t in fine_tokens) and any(p in wire for p in precise)
    assert next(m for m in messages if m["type"] == "estimate")["granularity"] == "fine"


@pytest.mark.django_db(transaction=True)
async def test_country_level_sends_no_cells_at_all(tiny_model, user, captured, settings):
    settings.UPLOAD_GRANULARITY = "country"
    _, messages, pages = await collect(user)
    coarse = await database_sync_to_async(coarse_partitioning)()
    for message in messages:
        for _, node in walk(message):
            assert node.get("token") is None
    partitions = next(m for m in messages if m["type"] == "partitions")
    heatmap = next(m for m in messages if m["type"] == "heatmap")
    estimate = next(m for m in messages if m["type"] == "estimate")
    assert partitions["partitionings"] == {} and heatmap["geojson"]["features"] == [] and heatmap["cells"] == 0
    assert (estimate["lat"], estimate["lon"]) == granularity.country_point(estimate["place"]["country"])
    assert estimate["radius_km"] >= 500 and estimate["granularity"] == "country"
    assert all(c["label"] for c in estimate["candidates"])
    assert not any(t in " ".join(pages) for t in coarse.tokens if len(t) > 4)


# "withheld" is a level a photo can be limited to, never one to configure: it would answer no upload at all.
@pytest.mark.parametrize("name, value", [("GEOWEB_UPLOAD_GRANULARITY", "street"),
                                         ("GEOWEB_UPLOAD_GRANULARITY", "withheld"),
                                         ("GEOWEB_UPLOAD_NON_LOCALIZABLE", "fine"),
                                         ("GEOWEB_UPLOAD_NON_LOCALIZABLE", "none")])
def test_unknown_granularity_setting_is_refused(tmp_path, name, value):
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {k: v for k, v in os.environ.items() if not k.startswith("GEOWEB_")}
    env.update({name: value, "GEOWEB_DATA_DIR": str(tmp_path)})
    result = subprocess.run([sys.executable, "manage.py", "check"], cwd=Path(__file__).resolve().parents[1],
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and name in result.stderr


@pytest.mark.django_db
def test_results_stored_before_the_limit_are_limited_by_the_migration(user):
    import importlib

    from django.apps import apps

    migration = importlib.import_module("predictor.migrations.0003_limit_earlier_results")
    fine_cell = {"token": "89c25a31", "class_index": 7, "probability": 0.4, "lat": 40.71234, "lon": -74.00567}
    events = [
        {"type": "partitions", "seq": 2, "partitionings": {"fine": [fine_cell]}},
        {"type": "heatmap", "seq": 3, "geojson": {"type": "FeatureCollection", "features": [{"properties": fine_cell}]},
         "cells": 1},
        {"type": "estimate", "seq": 4, "lat": 40.71234, "lon": -74.00567, "label": "United States (Northern America)",
         "radius_km": 30.0, "candidates": [fine_cell]},
    ]
    old = Analysis.objects.create(owner=user, status="done", original_sha256="0" * 64,
                                  result={"events": events, "summary": {"lat": 40.71234, "lon": -74.00567}})
    migration.limit_earlier_results(apps, None)
    old.refresh_from_db()
    stored = json.dumps(old.result)
    assert "89c25a31" not in stored and "40.71" not in stored and "74.00" not in stored
    assert old.granularity == "country" and "before answers were limited" in old.coarsening_reason
    assert old.summary == {"lat": 41.0, "lon": -74.0}
    assert next(e for e in old.events if e["type"] == "estimate")["label"] == "United States (Northern America)"

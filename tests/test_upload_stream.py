"""The analysis websocket: only the owner listens, stored state is replayed first, live events follow in order
without duplicates, errors reach the page, and malformed client messages never break the connection."""
from __future__ import annotations

import asyncio
import json

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.core.files.storage import default_storage
from django.test import Client

from predictor import events, inference, registry, services, worker
from predictor.models import Analysis
from tests.conftest import make_jpeg
from tests.streaming import ORDER, new_analysis, open_socket, receive_until, run_queued, without_replay_flag

@pytest.mark.django_db(transaction=True)
async def test_owner_gets_stages_in_order_and_the_stored_result_equals_the_stream(tiny_model, user):
    analysis = await database_sync_to_async(new_analysis)(user)
    socket = await open_socket(analysis.pk, user)
    try:
        status = await socket.receive_json_from(timeout=5)
        assert status["type"] == "status" and status["status"] == "queued" and status["replay"] is True
        assert await run_queued() == 1
        streamed = await receive_until(socket, {"done", "error"})
    finally:
        await socket.disconnect()
    assert [m["type"] for m in streamed] == ORDER
    assert [m["seq"] for m in streamed] == [1, 2, 3, 4, 5, 6]
    stored = await database_sync_to_async(Analysis.objects.get)(pk=analysis.pk)
    assert stored.status == "done" and stored.stage == "done"
    assert stored.events == streamed
    scene, partitions, heatmap, estimate, cam, done = streamed
    assert set(scene["s3"]) == {"indoor", "natural", "urban"} and len(scene["places365"]) == 5
    assert scene["untrained"] is True and scene["model_name"] == "tiny-untrained"
    assert {"coarse", "middle", "fine", "hierarchy"} <= set(partitions["partitionings"])
    assert heatmap["geojson"]["type"] == "FeatureCollection" and heatmap["cells"] > 0
    assert all(f["geometry"]["type"] == "Polygon" for f in heatmap["geojson"]["features"])
    assert -90 <= estimate["lat"] <= 90 and -180 <= estimate["lon"] <= 180
    assert estimate["label"] and estimate["candidates"] and all(c["label"] for c in estimate["candidates"])
    assert 0 <= estimate["confidence"] <= 1 and 25 <= estimate["radius_km"] <= 2500
    assert cam["url"] == f"/analyze/{analysis.pk}/cam.png"
    assert stored.cam and default_storage.exists(stored.cam.name)
    assert done["timings_ms"]["total_ms"] > 0
    assert stored.untrained is True and stored.model_name == "tiny-untrained"
    assert stored.summary["label"] == estimate["label"]


@pytest.mark.django_db(transaction=True)
async def test_reconnect_replays_the_same_picture(tiny_model, user):
    analysis = await database_sync_to_async(new_analysis)(user)
    await run_queued()  # nobody is watching: the events only go to the database
    stored = (await database_sync_to_async(Analysis.objects.get)(pk=analysis.pk)).events
    for _ in range(2):  # a reload, then another
        socket = await open_socket(analysis.pk, user)
        try:
            messages = await receive_until(socket, {"done"})
            assert await socket.receive_nothing(timeout=0.2)
        finally:
            await socket.disconnect()
        status, replayed = messages[0], messages[1:]
        assert status == {"type": "status", "analysis": analysis.pk, "status": "done", "stage": "done",
                          "model_name": "tiny-untrained", "untrained": True, "error": None, "replay": True}
        assert [without_replay_flag(m) for m in replayed] == stored
        assert all(m["replay"] for m in replayed)


@pytest.mark.django_db(transaction=True)
async def test_live_copies_of_replayed_events_are_not_sent_twice(tiny_model, user):
    analysis = await database_sync_to_async(new_analysis)(user)
    await run_queued()
    stored = (await database_sync_to_async(Analysis.objects.get)(pk=analysis.pk)).events
    socket = await open_socket(analysis.pk, user)
    try:
        await receive_until(socket, {"done"})
        # A late group message for an event the page already has (the race between replay and live).
        await database_sync_to_async(events.publish)(analysis_id=analysis.pk, event=stored[2])
        assert await socket.receive_nothing(timeout=0.3)
        newer = {"type": "error", "message": "later", "seq": len(stored) + 1}
        await database_sync_to_async(events.publish)(analysis_id=analysis.pk, event=newer)
        assert await socket.receive_json_from(timeout=2) == newer
    finally:
        await socket.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_another_user_is_refused_with_4403(tiny_model, user, other_user):
    analysis = await database_sync_to_async(new_analysis)(user)
    socket = await open_socket(analysis.pk, other_user)
    try:
        message = await socket.receive_json_from(timeout=5)
        assert message["type"] == "error" and "not yours" in message["message"]
        assert (await socket.receive_output(timeout=5)) == {"type": "websocket.close", "code": 4403}
    finally:
        await socket.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_anonymous_is_refused_with_4401(tiny_model, user):
    analysis = await database_sync_to_async(new_analysis)(user)
    socket = await open_socket(analysis.pk, None)
    try:
        message = await socket.receive_json_from(timeout=5)
        assert message["type"] == "error" and "log in" in message["message"]
        assert (await socket.receive_output(timeout=5)) == {"type": "websocket.close", "code": 4401}
    finally:
        await socket.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_missing_analysis_is_refused_like_someone_elses(tiny_model, user):
    socket = await open_socket(999_999, user)
    try:
        assert (await socket.receive_json_from(timeout=5))["type"] == "error"
        assert (await socket.receive_output(timeout=5))["code"] == 4403
    finally:
        await socket.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_corrupt_stored_photo_ends_in_an_error_event(tiny_model, user):
    analysis = await database_sync_to_async(new_analysis)(user)

    def corrupt():
        with default_storage.open(analysis.image.name, "wb") as handle:
            handle.write(b"\xff\xd8\xff\xe0 this is not the JPEG that was stored")

    await database_sync_to_async(corrupt)()
    socket = await open_socket(analysis.pk, user)
    try:
        await socket.receive_json_from(timeout=5)  # status
        await run_queued()
        messages = await receive_until(socket, {"done", "error"})
    finally:
        await socket.disconnect()
    assert [m["type"] for m in messages] == ["error"]
    assert "could not be read" in messages[0]["message"]
    stored = await database_sync_to_async(Analysis.objects.get)(pk=analysis.pk)
    assert stored.status == "failed" and stored.error_message == messages[0]["message"]
    assert stored.events == messages


@pytest.mark.django_db(transaction=True)
async def test_engine_refusal_of_one_photo_fails_only_that_analysis(tiny_model, user, monkeypatch):
    first = await database_sync_to_async(new_analysis)(user)
    second = await database_sync_to_async(new_analysis)(user)
    engine = await database_sync_to_async(inference.get_engine)()
    real = engine.predict_many

    def one_fails(sources, **options):
        results = real(sources, **options)
        return [ValueError("boom")] + results[1:]

    monkeypatch.setattr(engine, "predict_many", one_fails)
    await run_queued()
    rows = await database_sync_to_async(lambda: {a.pk: a for a in Analysis.objects.all()})()
    assert rows[first.pk].status == "failed" and "could not analyse" in rows[first.pk].error_message
    assert rows[second.pk].status == "done"


@pytest.mark.django_db(transaction=True)
async def test_malformed_client_messages_get_errors_and_the_socket_lives_on(tiny_model, user):
    analysis = await database_sync_to_async(new_analysis)(user)
    socket = await open_socket(analysis.pk, user)
    try:
        await socket.receive_json_from(timeout=5)  # status
        cases = [
            ({"text_data": "not json {"}, "not valid JSON"),
            ({"text_data": json.dumps({"type": "x" * 5000})}, "too large"),
            ({"bytes_data": b"\x00\x01binary"}, "Only JSON text"),
            ({"text_data": "[1, 2, 3]"}, "JSON object"),
            ({"text_data": json.dumps({"type": "delete_everything"})}, "Unknown message type"),
            ({"text_data": json.dumps({"type": "resync", "after_seq": "zero"})}, "after_seq"),
        ]
        for payload, phrase in cases:
            await socket.send_to(**payload)
            reply = await socket.receive_json_from(timeout=5)
            assert reply["type"] == "error" and reply["fatal"] is False and phrase in reply["message"], payload
        await socket.send_json_to({"type": "ping"})
        assert await socket.receive_json_from(timeout=5) == {"type": "pong"}
        await socket.send_json_to({"type": "resync", "after_seq": 0})
        assert (await socket.receive_json_from(timeout=5))["type"] == "status"
    finally:
        await socket.disconnect()


def test_heatmap_message_stays_far_below_one_mebibyte(shared_data, monkeypatch):
    """Even with the paper's 12,893 fine cells and far more cells than the engine sends, the frame is small."""
    import numpy as np

    from predictor.ml.partitions import Partitioning
    from predictor.ml.prediction import HIERARCHY, CellProbability, Prediction, SceneResult

    folder = shared_data / "geoestimation"
    partitionings = [Partitioning.from_csv(folder / f"cells_50_{tau}.csv", name=name)
                     for tau, name in [(5000, "coarse"), (2000, "middle"), (1000, "fine")]]
    rng = np.random.default_rng(0)

    def ranked(p: Partitioning, name: str, count: int):
        chosen = rng.choice(len(p), size=count, replace=False)
        probs = np.sort(rng.dirichlet(np.ones(count)))[::-1]
        return [CellProbability(name, int(i), p.tokens[i], float(q), float(p.lat[i]), float(p.lon[i]))
                for i, q in zip(chosen, probs)]

    top = {p.name: ranked(p, p.name, 1000) for p in partitionings}
    top[HIERARCHY] = ranked(partitionings[-1], HIERARCHY, 1000)
    prediction = Prediction(model_name="m", untrained=True,
                            scene=SceneResult({"indoor": 0.2, "natural": 0.3, "urban": 0.5}, "urban", []),
                            top_cells=top, argmax={}, lat=10.0, lon=20.0, confidence=0.1)
    monkeypatch.setattr(events, "HEATMAP_CELLS_PER_PARTITIONING", 1000)
    event = events.heatmap_event(prediction, partitionings)
    size = len(json.dumps({**event, "seq": 3, "analysis": 1}, separators=(",", ":")))
    assert size <= events.HEATMAP_MAX_BYTES < 1024 * 1024
    features = event["geojson"]["features"]
    assert len(features) > 300
    # What is cut is the least probable: the most probable cell of every partitioning is still there.
    kept = {(f["properties"]["partitioning"], f["properties"]["token"]) for f in features}
    assert all((name, cells[0].token) in kept for name, cells in top.items())

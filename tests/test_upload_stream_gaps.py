"""A live event lost between the worker and the page (channel layers drop messages for full or slow channels) is
filled in from the database before the next one, so the page still ends with every stage in order."""
from __future__ import annotations

import pytest
from channels.db import database_sync_to_async

from predictor import events
from tests.streaming import ORDER, new_analysis, open_socket, receive_until, run_queued


@pytest.mark.django_db(transaction=True)
async def test_a_lost_live_event_is_sent_from_the_database(tiny_model, user, monkeypatch):
    publish = events.publish
    dropped = []

    def lossy_publish(*, analysis_id, event):
        if event["type"] in {"heatmap", "cam"}:
            dropped.append(event["type"])
            return
        publish(analysis_id=analysis_id, event=event)

    monkeypatch.setattr(events, "publish", lossy_publish)
    analysis = await database_sync_to_async(new_analysis)(user)
    socket = await open_socket(analysis.pk, user)
    try:
        status = await socket.receive_json_from(timeout=5)
        assert status["type"] == "status"
        assert await run_queued() == 1
        streamed = await receive_until(socket, {"done", "error"})
        assert await socket.receive_nothing(timeout=0.2)
    finally:
        await socket.disconnect()
    assert dropped == ["heatmap", "cam"]
    assert [m["type"] for m in streamed] == ORDER
    assert [m["seq"] for m in streamed] == [1, 2, 3, 4, 5, 6]
    assert streamed[2].get("replay") is True and streamed[4].get("replay") is True

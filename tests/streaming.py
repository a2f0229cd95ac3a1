"""Helpers for tests that talk to the analysis websocket (not a test module: tests import these by name)."""
from __future__ import annotations

from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client

from predictor import services
from predictor.models import Analysis
from tests.conftest import make_jpeg

# The events of one analysis of the tiny ISN bundle, in the order the page receives them.
ORDER = ["scene", "partitions", "heatmap", "estimate", "cam", "done"]


def session_cookie(user) -> bytes:
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}".encode()


async def open_socket(analysis_id: int, user=None) -> WebsocketCommunicator:
    from geoweb.asgi import application

    headers = [(b"origin", b"http://localhost"), (b"host", b"localhost")]
    if user is not None:
        headers.append((b"cookie", await database_sync_to_async(session_cookie)(user)))
    communicator = WebsocketCommunicator(application, f"/ws/analysis/{analysis_id}/", headers=headers)
    connected, _ = await communicator.connect(timeout=5)
    assert connected
    return communicator


async def receive_until(communicator, last: set[str], timeout: float = 20) -> list[dict]:
    messages = []
    while True:
        message = await communicator.receive_json_from(timeout=timeout)
        messages.append(message)
        if message["type"] in last:
            return messages


def without_replay_flag(event: dict) -> dict:
    return {k: v for k, v in event.items() if k != "replay"}


def new_analysis(user) -> Analysis:
    return services.create_analysis(owner=user, data=make_jpeg(320, 240))


async def run_queued():
    def work():
        claimed = services.claim_analyses(worker_id="test-worker", limit=8)
        services.run_analyses(analyses=claimed)
        return len(claimed)

    return await database_sync_to_async(work)()

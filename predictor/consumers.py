"""The websocket of one analysis: only its owner may listen; the stored state comes first, then live events."""
from __future__ import annotations

import asyncio
import json
import time

from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings

from core import ratelimit
from predictor import events, selectors

MAX_CLIENT_MESSAGE_BYTES = 4096
# What one connection may send: this many messages per window; beyond that it is closed.
MAX_CLIENT_MESSAGES = 30
CLIENT_MESSAGE_WINDOW_S = 10
CLOSE_NOT_LOGGED_IN = 4401
CLOSE_NOT_YOURS = 4403
CLOSE_TOO_MANY = 4429


def scope_ip(scope) -> str:
    """The client address of a websocket, by the same rule as HTTP (X-Forwarded-For only when trusted)."""
    if settings.RATE_LIMIT_TRUST_FORWARDED:
        for name, value in scope.get("headers", []):
            if name == b"x-forwarded-for" and value:
                return value.decode("latin-1").split(",")[-1].strip()
    client = scope.get("client")
    return client[0] if client else "unknown"


class AnalysisConsumer(AsyncJsonWebsocketConsumer):
    group: str | None = None
    last_seq = 0
    window_start = 0.0
    window_count = 0

    async def connect(self):
        user = self.scope.get("user")
        # Accept first so that the page gets a readable reason with the close code, not a bare failed handshake.
        await self.accept()
        verdict = await sync_to_async(ratelimit.check)("websocket", client_ip=scope_ip(self.scope),
                                                       path=self.scope.get("path", ""))
        if not verdict.allowed:
            await self.send_json({"type": "error", "message": "Too many connections from your address. Please wait "
                                                              f"{verdict.retry_after_s} s and reload the page."})
            await self.close(code=CLOSE_TOO_MANY)
            return
        if user is None or not user.is_authenticated:
            await self.send_json({"type": "error", "message": "Please log in to see this analysis."})
            await self.close(code=CLOSE_NOT_LOGGED_IN)
            return
        analysis_id = self.scope["url_route"]["kwargs"]["analysis_id"]
        if not await self._owns(user, analysis_id):
            await self.send_json({"type": "error", "message": "This analysis does not exist or is not yours."})
            await self.close(code=CLOSE_NOT_YOURS)
            return
        events.register_live_loop(asyncio.get_running_loop())
        # Join before reading the database: an event stored after the read then still arrives live.
        self.group = events.group_name(analysis_id)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self._replay(user, analysis_id, after_seq=0)

    async def disconnect(self, code):
        if self.group:
            await self.channel_layer.group_discard(self.group, self.channel_name)
            self.group = None

    async def receive(self, text_data=None, bytes_data=None, **kwargs):
        now = time.monotonic()
        if now - self.window_start >= CLIENT_MESSAGE_WINDOW_S:
            self.window_start, self.window_count = now, 0
        self.window_count += 1
        if self.window_count > MAX_CLIENT_MESSAGES:
            text = (f"Too many messages (limit {MAX_CLIENT_MESSAGES} per {CLIENT_MESSAGE_WINDOW_S} s); "
                    "the connection is closed.")
            await self.send_json({"type": "error", "message": text})
            await self.close(code=CLOSE_TOO_MANY)
            return
        if bytes_data is not None or text_data is None:
            await self._reject_message("Only JSON text messages are understood.")
            return
        if len(text_data.encode()) > MAX_CLIENT_MESSAGE_BYTES:
            await self._reject_message(f"Message too large (limit {MAX_CLIENT_MESSAGE_BYTES} bytes).")
            return
        try:
            message = json.loads(text_data)
        except ValueError:
            await self._reject_message("The message is not valid JSON.")
            return
        if not isinstance(message, dict):
            await self._reject_message("A message must be a JSON object with a \"type\".")
            return
        kind = message.get("type")
        if kind == "ping":
            await self.send_json({"type": "pong"})
        elif kind == "resync":
            after = message.get("after_seq", 0)
            if not isinstance(after, int) or isinstance(after, bool) or after < 0:
                await self._reject_message("\"after_seq\" must be a non-negative integer.")
                return
            if self.group:
                self.last_seq = min(self.last_seq, after)
                await self._replay(self.scope["user"], self.scope["url_route"]["kwargs"]["analysis_id"],
                                   after_seq=after)
        else:
            await self._reject_message(f"Unknown message type {str(kind)[:40]!r}; known: ping, resync.")

    async def analysis_event(self, message):
        event = message["event"]
        seq = event.get("seq", 0)
        if seq and seq <= self.last_seq:
            return  # already sent from the database
        if seq > self.last_seq + 1:
            # An event in between was lost on the way: a channel layer drops messages for a channel that is full
            # or read too late. Every event is stored before it is published, so the database has the missing
            # ones (and this one): send them from there, in order.
            await self._send_stored_after(self.last_seq)
            if seq <= self.last_seq:
                return
        self.last_seq = max(self.last_seq, seq)
        await self.send_json(event)

    async def _send_stored_after(self, after_seq: int):
        _, stored = await self._stored_state(self.scope["user"], self.scope["url_route"]["kwargs"]["analysis_id"],
                                             after_seq)
        for event in stored:
            if event["seq"] > self.last_seq:
                self.last_seq = event["seq"]
                await self.send_json({**event, "replay": True})

    async def _replay(self, user, analysis_id, *, after_seq: int):
        status, stored = await self._stored_state(user, analysis_id, after_seq)
        if status is None:  # deleted meanwhile
            await self.send_json({"type": "error", "message": "This analysis was deleted."})
            await self.close(code=CLOSE_NOT_YOURS)
            return
        await self.send_json({**status, "replay": True})
        for event in stored:
            if event["seq"] > self.last_seq:
                self.last_seq = event["seq"]
                await self.send_json({**event, "replay": True})

    async def _reject_message(self, text: str):
        await self.send_json({"type": "error", "message": text, "fatal": False})

    @database_sync_to_async
    def _owns(self, user, analysis_id) -> bool:
        return selectors.analysis_of(user=user, analysis_id=analysis_id) is not None

    @database_sync_to_async
    def _stored_state(self, user, analysis_id, after_seq):
        analysis = selectors.analysis_of(user=user, analysis_id=analysis_id)
        if analysis is None:
            return None, []
        return selectors.status_message(analysis=analysis), selectors.stored_events(analysis=analysis,
                                                                                  after_seq=after_seq)

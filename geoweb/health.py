"""`/healthz`: can this web process reach its database and its channel layer? JSON, 200 when both answer, else 503.

Load balancers and process supervisors poll it; the checks are real round trips (a query, a message sent to and
received from a fresh channel), each bounded by a timeout so a hung dependency gives a 503, not a hung probe.
Anyone gets the verdict only; what was checked, with which backends, and the embedded worker's state go to staff
and to callers on this machine (a probe from loopback that no proxy forwarded).
"""
from __future__ import annotations

import asyncio
import ipaddress
import time

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import connection
from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET


def check_database() -> dict:
    started = time.perf_counter()
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as error:  # any failure is the answer, not a crash of the probe
        connection.close_if_unusable_or_obsolete()
        return {"ok": False, "error": f"{type(error).__name__}: {error}".strip()[:300]}
    return {"ok": True, "ms": round((time.perf_counter() - started) * 1000, 1), "vendor": connection.vendor}


async def check_channel_layer(*, timeout_s: float) -> dict:
    layer = get_channel_layer()
    if layer is None:
        return {"ok": False, "error": "no channel layer configured"}
    started = time.perf_counter()
    try:
        async with asyncio.timeout(timeout_s):
            channel = await layer.new_channel()
            await layer.send(channel, {"type": "healthz.ping"})
            message = await layer.receive(channel)
    except TimeoutError:
        return {"ok": False, "error": f"no answer within {timeout_s:g} s", "backend": type(layer).__name__}
    except Exception as error:
        return {"ok": False, "error": f"{type(error).__name__}: {error}".strip()[:300], "backend": type(layer).__name__}
    if message.get("type") != "healthz.ping":
        return {"ok": False, "error": "the channel layer returned a different message", "backend": type(layer).__name__}
    return {"ok": True, "ms": round((time.perf_counter() - started) * 1000, 1), "backend": type(layer).__name__}


def _from_this_machine(request) -> bool:
    # Behind the documented nginx every request arrives from loopback, always with X-Forwarded-For: those are the
    # public's requests, not a local probe's.
    if "HTTP_X_FORWARDED_FOR" in request.META or "HTTP_FORWARDED" in request.META:
        return False
    try:
        return ipaddress.ip_address(request.META.get("REMOTE_ADDR", "")).is_loopback
    except ValueError:
        return False


async def _may_see_details(request) -> bool:
    if _from_this_machine(request):
        return True
    user = await request.auser()
    return bool(user.is_active and user.is_staff)


@never_cache
@require_GET
async def healthz(request):
    database = await sync_to_async(check_database)()
    channel_layer = await check_channel_layer(timeout_s=settings.HEALTHZ_TIMEOUT_S)
    ok = database["ok"] and channel_layer["ok"]
    body = {"status": "ok" if ok else "unavailable"}
    if await _may_see_details(request):
        from predictor.worker import embedded_status

        body.update(database=database, channel_layer=channel_layer, embedded_worker=embedded_status())
    return JsonResponse(body, status=200 if ok else 503)

"""Per-client rate limits with a sliding window, counted in a cache every web process shares.

The counters live in the cache `settings.RATE_LIMIT_CACHE`: Redis in scale-out (one count across all web
processes), and in the embedded mode a file-backed cache under the data directory, so a restart does not hand out a
fresh allowance. The window slides: a rule of N per W seconds weighs the previous fixed window's count by the part
of it still inside the last W seconds (the "sliding window counter"), so a burst across a window boundary gets no
double allowance. Over the limit, views answer HTTP 429 with a sentence and Retry-After, and the start of each
lock-out is written to the audit log (core.models.LockOut). docs/responsible-use.md says why this is not
django-ratelimit or django-axes.
"""
from __future__ import annotations

import functools
import ipaddress
import logging
import math
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import caches
from django.http import JsonResponse
from django.shortcuts import render

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RateLimit:
    limit: int
    window_s: int


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    retry_after_s: int


def rule_for(scope: str) -> RateLimit:
    """The rule configured in settings.RATE_LIMITS[scope] as (events, window seconds)."""
    limit, window_s = settings.RATE_LIMITS[scope]
    return RateLimit(int(limit), int(window_s))


# Backends whose add/incr are atomic across processes; for the others (the embedded mode's file-backed cache, one web
# process) a lock in this process makes read-check-increment one step.
_ATOMIC_BACKENDS = ("RedisCache",)
_local_lock = threading.Lock()
# Weights are fractions of a window: a count that lands exactly on the limit must not be refused by rounding.
_EPSILON = 1e-9


def _store():
    return caches[settings.RATE_LIMIT_CACHE]


def hit(key: str, rule: RateLimit) -> Verdict:
    """Count one event for `key` if it is within the rule over the last `rule.window_s` seconds; a refused event is
    not counted, so Retry-After tells the truth to a client that waits."""
    if rule.limit <= 0:
        return Verdict(True, 0)
    window_s = rule.window_s
    now = time.time()
    window = int(now // window_s)
    elapsed = now - window * window_s
    current_key, previous_key = f"rl:{key}:{window}", f"rl:{key}:{window - 1}"
    store = _store()
    atomic = type(store).__name__ in _ATOMIC_BACKENDS
    try:
        with (nullcontext() if atomic else _local_lock):
            counts = store.get_many([previous_key, current_key])
            previous, current = int(counts.get(previous_key, 0)), int(counts.get(current_key, 0))
            weight = 1.0 - elapsed / window_s
            if previous * weight + current + 1 > rule.limit + _EPSILON:
                return Verdict(False, _retry_after(previous, current, elapsed, window_s, rule.limit))
            # Kept for two windows: this one, and the next, where it is the previous one.
            store.add(current_key, 0, timeout=2 * window_s + 1)
            try:
                counted = store.incr(current_key)
            except ValueError:  # expired between add and incr
                store.add(current_key, 1, timeout=2 * window_s + 1)
                counted = 1
            if not atomic:
                store.delete(f"rl:{key}:{window - 2}")  # a file-backed cache keeps expired files until read
    except Exception:  # noqa: BLE001 - a limiter that cannot count must not take the site down with its store
        logger.exception("rate limit store unavailable; %s let through", key)
        return Verdict(True, 0)
    # Between the check and the increment other processes may have counted too: the increment decides.
    if previous * weight + counted > rule.limit + _EPSILON:
        return Verdict(False, _retry_after(previous, counted - 1, elapsed, window_s, rule.limit))
    return Verdict(True, 0)


def _retry_after(previous: int, current: int, elapsed: float, window_s: int, limit: int) -> int:
    """Seconds until one more event fits, if nothing else is counted meanwhile: the previous window's weight falls
    linearly to 0 at the end of this window, after which this window's count becomes the falling one."""
    room = limit - 1 - current
    if room >= 0:
        # Within this window: previous * (1 - (elapsed + t) / window) <= room.
        wait = window_s * (1 - room / previous) - elapsed if previous > 0 else 0.0
        if wait <= window_s - elapsed:
            return max(1, math.ceil(wait - _EPSILON))
    # After this window: current * (1 - t' / window) + 1 <= limit.
    wait = (window_s - elapsed) + max(0.0, window_s * (1 - (limit - 1) / current) if current else 0.0)
    return max(1, math.ceil(wait - _EPSILON))


def check(scope: str, *, client_ip: str, username: str = "", path: str = "") -> Verdict:
    """Count one event of `scope` for a client address; the first refusal of a lock-out goes to the audit log."""
    key = f"{scope}:ip:{client_ip}"
    verdict = hit(key, rule_for(scope))
    if not verdict.allowed:
        _record_lockout(key, scope=scope, client_ip=client_ip, username=username, path=path,
                        retry_after_s=verdict.retry_after_s)
    return verdict


def _record_lockout(key: str, *, scope: str, client_ip: str, username: str, path: str, retry_after_s: int) -> None:
    try:
        # One row per lock-out: later refusals while it lasts are not written again.
        if not _store().add(f"rl-locked:{key}", 1, timeout=max(1, retry_after_s)):
            return
        from core.models import LockOut

        try:
            address = str(ipaddress.ip_address(client_ip))
        except ValueError:
            address = None
        LockOut.objects.create(scope=scope, client_ip=address, username=username[:150], path=path[:200],
                               retry_after_s=retry_after_s)
        logger.warning("rate limit %s: %s locked out for %d s (user name tried: %r, %s)", scope, client_ip,
                       retry_after_s, username, path)
    except Exception:  # noqa: BLE001 - the refusal stands even if it cannot be written down
        logger.exception("could not record a %s lock-out of %s", scope, client_ip)


def client_ip(request) -> str:
    # Behind the documented nginx, X-Forwarded-For is set by the proxy; trust it only when told to.
    if settings.RATE_LIMIT_TRUST_FORWARDED:
        forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
        if forwarded:
            return forwarded.split(",")[-1].strip()
    return request.META.get("REMOTE_ADDR", "unknown")


def too_many_requests(request, verdict: Verdict, what: str):
    message = f"Too many {what} from your address. Please wait {verdict.retry_after_s} s and try again."
    if request.headers.get("accept", "").startswith("application/json") or request.content_type == "application/json":
        response = JsonResponse({"error": message}, status=429)
    else:
        response = render(request, "429.html", {"message": message}, status=429)
    response["Retry-After"] = str(verdict.retry_after_s)
    return response


def limit_by_ip(scope: str, *, methods: tuple[str, ...] = ("POST",), username_field: str | None = None):
    """Decorate a view: requests with one of `methods` count against settings.RATE_LIMITS[scope] per client IP.

    `username_field`: the POST field whose value a lock-out records (login forms); other views' bodies are not read
    here, so that an upload view can still refuse an oversized body before Django reads it.
    """

    def decorator(view):
        @functools.wraps(view)
        def wrapped(request, *args, **kwargs):
            if request.method in methods:
                username = str(request.POST.get(username_field, "")) if username_field else ""
                verdict = check(scope, client_ip=client_ip(request), path=request.path, username=username)
                if not verdict.allowed:
                    return too_many_requests(request, verdict, scope.replace("_", " ") + " attempts")
            return view(request, *args, **kwargs)

        return wrapped

    return decorator

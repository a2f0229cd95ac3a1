"""Fixed-window rate limits kept in Django's cache (local memory embedded, Redis in scale-out, so a limit holds
across processes). Over the limit, views answer HTTP 429 with a clear message and a Retry-After header."""
from __future__ import annotations

import functools
import time
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache
from django.http import JsonResponse
from django.shortcuts import render


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


def hit(key: str, rule: RateLimit) -> Verdict:
    """Count one event for `key` in the current window and say whether it is within the rule."""
    if rule.limit <= 0:
        return Verdict(True, 0)
    window = int(time.time()) // rule.window_s
    cache_key = f"rl:{key}:{window}"
    # add() is atomic on every backend; incr() is atomic on Redis and under the local-memory lock.
    cache.add(cache_key, 0, timeout=rule.window_s + 1)
    try:
        count = cache.incr(cache_key)
    except ValueError:  # expired between add and incr
        cache.add(cache_key, 1, timeout=rule.window_s + 1)
        count = 1
    retry_after = rule.window_s - int(time.time()) % rule.window_s
    return Verdict(count <= rule.limit, retry_after)


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


def limit_by_ip(scope: str, *, methods: tuple[str, ...] = ("POST",)):
    """Decorate a view: requests with one of `methods` count against settings.RATE_LIMITS[scope] per client IP."""

    def decorator(view):
        @functools.wraps(view)
        def wrapped(request, *args, **kwargs):
            if request.method in methods:
                verdict = hit(f"{scope}:ip:{client_ip(request)}", rule_for(scope))
                if not verdict.allowed:
                    return too_many_requests(request, verdict, scope.replace("_", " ") + " attempts")
            return view(request, *args, **kwargs)

        return wrapped

    return decorator

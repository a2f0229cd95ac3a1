"""Where a `next` parameter may send someone: a path on this site, by Django's own host and scheme check."""
from __future__ import annotations

from django.shortcuts import resolve_url
from django.utils.http import url_has_allowed_host_and_scheme


def safe_next(request, target: str | None, *, default: str) -> str:
    """`target` if it stays on this site (same host, no scheme change to http from https), else `default`
    (a URL or a URL name). `//evil.example/`, `https://evil.example/` and `/\\evil.example` all give `default`."""
    if target and url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()},
                                                  require_https=request.is_secure()):
        return target
    return resolve_url(default)

"""Which pages may open a websocket here: only this site's own origin (scheme, host and port), as the browser
names it in the Origin header, or an origin listed in CSRF_TRUSTED_ORIGINS. Channels' AllowedHostsOriginValidator
compares host names only, so `http://localhost:6666` or `https://127.0.0.1` passed for `http://localhost:8000` and
could read an analysis with the visitor's cookies (cross-site websocket hijacking)."""
from __future__ import annotations

from urllib.parse import urlsplit

from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.http.request import split_domain_port, validate_host
from django.utils.http import is_same_domain

DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin_parts(origin: str) -> tuple[str, str, int] | None:
    try:
        parts = urlsplit(origin)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname or parts.path not in ("", "/"):
        return None
    return parts.scheme, parts.hostname.lower(), port or DEFAULT_PORTS[parts.scheme]


def _is_secure(scope, headers: dict[bytes, bytes]) -> bool:
    # Behind a TLS-terminating proxy the scheme the browser used is in the header Django is told to trust.
    proxy_header = getattr(settings, "SECURE_PROXY_SSL_HEADER", None)
    if proxy_header:
        name, expected = proxy_header
        value = headers.get(name.removeprefix("HTTP_").lower().replace("_", "-").encode("latin-1"))
        if value is not None:
            return value.decode("latin-1").split(",")[0].strip() == expected
    return scope.get("scheme") in ("wss", "https")


def origin_allowed(scope) -> bool:
    """True if the handshake's Origin is this site as reached through its Host header, or a trusted origin."""
    headers = dict(scope.get("headers", []))
    try:
        origin = headers.get(b"origin", b"").decode("ascii")
        host = headers.get(b"host", b"").decode("ascii")
    except UnicodeDecodeError:
        return False
    claimed = _origin_parts(origin) if origin else None
    if claimed is None:
        return False
    domain, port = split_domain_port(host)
    if domain and validate_host(domain, settings.ALLOWED_HOSTS):
        scheme = "https" if _is_secure(scope, headers) else "http"
        if claimed == (scheme, domain, int(port) if port else DEFAULT_PORTS[scheme]):
            return True
    for trusted in settings.CSRF_TRUSTED_ORIGINS:
        # As for Django's CSRF check: "https://*.example.com" trusts example.com and its subdomains, same scheme
        # and port.
        wildcard = "://*." in trusted
        wanted = _origin_parts(trusted.replace("://*.", "://", 1))
        if wanted is None or (wanted[0], wanted[2]) != (claimed[0], claimed[2]):
            continue
        if claimed[1] == wanted[1] or (wildcard and is_same_domain(claimed[1], "." + wanted[1])):
            return True
    return False


class SameOriginValidator:
    """ASGI middleware for websockets: refuse the handshake (HTTP 403) unless `origin_allowed`."""

    def __init__(self, application):
        self.application = application

    async def __call__(self, scope, receive, send):
        if scope["type"] != "websocket":
            raise ValueError("SameOriginValidator only guards websockets")
        if origin_allowed(scope):
            return await self.application(scope, receive, send)
        return await WebsocketDenier()(scope, receive, send)

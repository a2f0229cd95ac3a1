"""Issue 14, section 2: each security finding, tested through what an attacker (or a careless deployment) sees.

- `next` after sign-up (and on the terms page) stays on this site: Django's own host check.
- The admin's login is rate limited like the site's, from the same allowance, and lock-outs reach the audit log.
- The websocket's Origin must match this site's scheme, host and port, not just its host name.
- Rate-limit counters live in a cache store: they survive a restart, are shared by processes, slide (no double
  allowance across a window boundary), and the daily upload quota's 429 carries Retry-After.
- /healthz tells anonymous callers only "ok" or not; backends and the worker go to staff and to loopback.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from channels.testing import WebsocketCommunicator
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from core import ratelimit
from core.models import LockOut
from predictor import services
from tests.conftest import make_jpeg
from tests.streaming import session_cookie

ROOT = Path(__file__).resolve().parents[1]
SIGNUP = {"password1": "correct-horse-battery-9", "password2": "correct-horse-battery-9"}


# --- open redirect ---------------------------------------------------------------------------------------------

@pytest.mark.django_db
@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/", "/\\evil.example", "\\\\evil.example",
                                    "http://testserver.evil.example/", "javascript:alert(1)"])
def test_signup_never_sends_the_new_user_to_another_site(client, target):
    response = client.post(f"{reverse('signup')}?next={target}", {"username": "newbie", **SIGNUP})
    assert response.status_code == 302
    assert response["Location"] == reverse("home")


@pytest.mark.django_db
def test_signup_follows_a_next_on_this_site(client):
    response = client.post(f"{reverse('signup')}?next=/analyze/", {"username": "newbie", **SIGNUP})
    assert response.status_code == 302 and response["Location"] == "/analyze/"


@pytest.mark.django_db
@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/", "/\\evil.example"])
def test_accepting_the_terms_never_sends_the_user_to_another_site(client, django_user_model, target):
    client.force_login(django_user_model.objects.create_user(username="t", password="a-long-password-3"))
    response = client.post(reverse("terms"), {"accept": "yes", "next": target})
    assert response.status_code == 302 and response["Location"] == reverse("analyze")


# --- admin login ------------------------------------------------------------------------------------------------

@pytest.mark.django_db
def test_wrong_admin_passwords_are_limited_and_the_lock_out_is_audited(client, settings, admin_user):
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "login": (10, 300)}
    url = f"/{settings.ADMIN_PATH}login/"
    statuses = [client.post(url, {"username": "admin", "password": f"guess-{n}"}, REMOTE_ADDR="198.51.100.7")
                .status_code for n in range(25)]
    assert statuses[:10] == [200] * 10 and statuses[10:] == [429] * 15
    refused = client.post(url, {"username": "admin", "password": "password"}, REMOTE_ADDR="198.51.100.7")
    assert refused.status_code == 429 and int(refused["Retry-After"]) > 0
    [lockout] = LockOut.objects.all()  # one row for the lock-out, not one per refused request
    assert (lockout.scope, lockout.client_ip, lockout.username, lockout.path) == ("login", "198.51.100.7", "admin",
                                                                                url)
    assert lockout.retry_after_s > 0


@pytest.mark.django_db
def test_admin_and_site_logins_share_one_allowance(client, settings, user):
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "login": (4, 300)}
    for _ in range(2):
        client.post(f"/{settings.ADMIN_PATH}login/", {"username": "alice", "password": "x"})
        client.post(reverse("login"), {"username": "alice", "password": "x"})
    assert client.post(f"/{settings.ADMIN_PATH}login/", {"username": "alice", "password": "x"}).status_code == 429
    assert client.post(reverse("login"), {"username": "alice", "password": "x"}).status_code == 429


# --- websocket origin -------------------------------------------------------------------------------------------

async def _handshake(analysis_id, user, origin: bytes, host: bytes, extra=()) -> bool:
    from channels.db import database_sync_to_async

    from geoweb.asgi import application

    headers = [(b"origin", origin), (b"host", host), (b"cookie", await database_sync_to_async(session_cookie)(user)),
               *extra]
    socket = WebsocketCommunicator(application, f"/ws/analysis/{analysis_id}/", headers=headers)
    connected, _ = await socket.connect(timeout=5)
    if connected:
        await socket.disconnect()
    return connected


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("origin, host, allowed", [
    (b"http://localhost:6666", b"localhost:8000", False),  # another port of the same host
    (b"http://localhost:6666", b"localhost", False),
    (b"https://127.0.0.1", b"127.0.0.1", False),  # another scheme
    (b"http://127.0.0.1.evil.example", b"127.0.0.1", False),
    (b"null", b"localhost", False),
    (b"http://localhost:8000", b"localhost:8000", True),
    (b"http://localhost", b"localhost", True),
    (b"http://localhost:80", b"localhost", True),  # the default port, spelled out
])
async def test_websocket_origin_must_be_this_sites_scheme_host_and_port(user, settings, origin, host, allowed):
    from channels.db import database_sync_to_async

    settings.EMBEDDED_WORKER = False
    analysis = await database_sync_to_async(services.create_analysis)(owner=user, data=make_jpeg())
    assert await _handshake(analysis.pk, user, origin, host) is allowed


@pytest.mark.django_db(transaction=True)
async def test_behind_a_tls_proxy_the_origin_is_https(user, settings):
    from channels.db import database_sync_to_async

    settings.EMBEDDED_WORKER = False
    settings.ALLOWED_HOSTS = ["geo.example"]
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    analysis = await database_sync_to_async(services.create_analysis)(owner=user, data=make_jpeg())
    proxied = [(b"x-forwarded-proto", b"https")]
    assert await _handshake(analysis.pk, user, b"https://geo.example", b"geo.example", proxied)
    assert not await _handshake(analysis.pk, user, b"http://geo.example", b"geo.example", proxied)
    assert not await _handshake(analysis.pk, user, b"https://evil.example", b"evil.example", proxied)


# --- rate-limit store -------------------------------------------------------------------------------------------

HIT = """
import django, json, sys
django.setup()
from core import ratelimit
rule = ratelimit.RateLimit(int(sys.argv[2]), 3600)
print(json.dumps([ratelimit.hit(sys.argv[1], rule).allowed for _ in range(int(sys.argv[3]))]))
"""


def _hits_in_a_new_process(key: str, limit: int, count: int, data_dir: Path) -> list[bool]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GEOWEB_") and k != "DJANGO_ALLOW_ASYNC_UNSAFE"}
    env.update(DJANGO_SETTINGS_MODULE="geoweb.settings", GEOWEB_DATA_DIR=str(data_dir), GEOWEB_LOG_LEVEL="ERROR",
               PYTHONPATH=str(ROOT))
    for name in ("DATABASE_URL", "REDIS_URL"):  # the scale-out pass: the counters are in its Redis
        if name in os.environ:
            env[name] = os.environ[name]
    result = subprocess.run([sys.executable, "-c", HIT, key, str(limit), str(count)], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_counters_survive_a_restart_and_are_shared_by_processes(tmp_path):
    key = f"upload:ip:203.0.113.{os.getpid() % 250}:{tmp_path.name}"
    assert _hits_in_a_new_process(key, 5, 3, tmp_path) == [True, True, True]
    # A second process (the server after a restart, or another web process) sees the same three.
    assert _hits_in_a_new_process(key, 5, 4, tmp_path) == [True, True, False, False]


def test_the_window_slides_across_a_boundary(monkeypatch):
    rule = ratelimit.RateLimit(3, 60)
    clock = {"now": 1_000_000 * 60 + 55.0}  # 5 s before a window boundary
    monkeypatch.setattr(ratelimit.time, "time", lambda: clock["now"])
    assert [ratelimit.hit("sliding", rule).allowed for _ in range(3)] == [True, True, True]
    clock["now"] += 10  # 5 s into the next fixed window: a fixed window would hand out three more
    verdict = ratelimit.hit("sliding", rule)
    assert not verdict.allowed
    # The previous window's three weigh 3 * (1 - 5/60) = 2.75; one more fits once that falls to 2, after 15 s more.
    assert verdict.retry_after_s == 15
    clock["now"] += 14
    assert not ratelimit.hit("sliding", rule).allowed
    clock["now"] += 1
    assert ratelimit.hit("sliding", rule).allowed


def test_retry_after_is_when_the_next_request_is_let_through(monkeypatch):
    rule = ratelimit.RateLimit(2, 100)
    clock = {"now": 7_000_000 * 100 + 10.0}
    monkeypatch.setattr(ratelimit.time, "time", lambda: clock["now"])
    assert ratelimit.hit("ra", rule).allowed and ratelimit.hit("ra", rule).allowed
    verdict = ratelimit.hit("ra", rule)
    assert not verdict.allowed
    clock["now"] += verdict.retry_after_s - 1
    assert not ratelimit.hit("ra", rule).allowed
    clock["now"] += 1
    assert ratelimit.hit("ra", rule).allowed


@pytest.mark.django_db
def test_the_daily_quota_429_carries_retry_after(client, user, settings):
    settings.UPLOAD_DAILY_QUOTA = 1
    settings.EMBEDDED_WORKER = False
    client.force_login(user)

    def post():
        return client.post(reverse("analyze"), {"photo": SimpleUploadedFile("p.jpg", make_jpeg())},
                           HTTP_ACCEPT="application/json")

    assert post().status_code == 201
    over = post()
    assert over.status_code == 429
    assert 86_000 < int(over["Retry-After"]) <= 86_400
    assert "try again in 24 h" in over.json()["error"] or "try again in 23 h" in over.json()["error"]
    page = client.post(reverse("analyze"), {"photo": SimpleUploadedFile("p.jpg", make_jpeg())})
    assert page.status_code == 429 and int(page["Retry-After"]) > 86_000


# --- healthz ----------------------------------------------------------------------------------------------------

@pytest.mark.django_db
def test_healthz_tells_anonymous_callers_only_the_verdict(client):
    remote = client.get("/healthz", REMOTE_ADDR="203.0.113.9")
    assert remote.status_code == 200 and json.loads(remote.content) == {"status": "ok"}
    # Behind the proxy every request comes from loopback, always with X-Forwarded-For: that is the public too.
    proxied = client.get("/healthz", REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="203.0.113.9")
    assert json.loads(proxied.content) == {"status": "ok"}
    assert b"sqlite" not in remote.content and b"Layer" not in remote.content


@pytest.mark.django_db
def test_healthz_details_go_to_loopback_and_to_staff(client, admin_user):
    local = json.loads(client.get("/healthz", REMOTE_ADDR="127.0.0.1").content)
    assert local["database"]["ok"] and local["channel_layer"]["backend"] and "embedded_worker" in local
    client.force_login(admin_user)
    staff = json.loads(client.get("/healthz", REMOTE_ADDR="203.0.113.9").content)
    assert staff["database"]["vendor"] and staff["channel_layer"]["ok"]

"""Upload-analysis latency as a user sees it: upload -> first streamed event (scene) and upload -> done.

Starts Daphne itself on the embedded defaults (SQLite, in-memory channel layer, the inference worker inside the
web process) with a throwaway data directory, installs a model bundle (the tiny random-weight one unless --bundle
is given), and drives it over loopback with N concurrent users. Each user repeats: POST the photo to /analyze/
(as the page's fetch does), open ws/analysis/<id>/ as the live page does, and wait for `done`. Concurrency is
bounded by --users; nothing leaves 127.0.0.1.

    .venv/bin/python benchmarks/bench_upload.py --users 1 --uploads 20
    .venv/bin/python benchmarks/bench_upload.py --users 32 --uploads 4
    .venv/bin/python benchmarks/bench_upload.py --device cuda --bundle /path/to/resnet50-isn --users 32
"""
from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable


def photo_bytes(seed: int, size=(1024, 768)) -> bytes:
    """A phone-like JPEG with some structure (sky, ground, a few shapes) that differs per upload."""
    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    image = Image.new("RGB", size, tuple(int(c) for c in rng.integers(80, 220, 3)))
    draw = ImageDraw.Draw(image)
    draw.rectangle([0, size[1] * 2 // 3, size[0], size[1]], fill=tuple(int(c) for c in rng.integers(20, 140, 3)))
    for _ in range(12):
        x, y = int(rng.integers(0, size[0])), int(rng.integers(0, size[1]))
        draw.ellipse([x, y, x + 80, y + 60], fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
    noise = rng.integers(0, 24, (size[1], size[0], 3), dtype=np.uint8)
    image = Image.fromarray(np.clip(np.asarray(image, dtype=np.int16) + noise - 12, 0, 255).astype(np.uint8))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def prepare(data_dir: Path, env: dict, bundle: str | None, users: int) -> list[str]:
    """Migrate, install the bundle, create the users and a logged-in session for each; returns session keys."""
    subprocess.run([PYTHON, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True)
    script = f"""
import django, os
django.setup()
from pathlib import Path
from django.contrib.auth import get_user_model, SESSION_KEY, BACKEND_SESSION_KEY, HASH_SESSION_KEY
from django.contrib.sessions.backends.db import SessionStore
from predictor import policy, registry
from predictor.ml.isn import make_tiny_bundle
bundle = {bundle!r} or str(make_tiny_bundle(Path({str(data_dir)!r}) / "tiny-build"))
registry.install_bundle(bundle, replace=True)
User = get_user_model()
keys = []
for i in range({users}):
    user = User.objects.create_user(username=f"bench{{i}}", password="bench-password-123")
    policy.accept_terms(user)
    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.create()
    keys.append(session.session_key)
print(" ".join(keys))
"""
    done = subprocess.run([PYTHON, "-c", script], cwd=ROOT, env=env, check=True, capture_output=True, text=True)
    return done.stdout.split()


async def one_user(base: str, session_key: str, photos: list[bytes], results: list, errors: list):
    import aiohttp

    csrf = secrets.token_hex(16)  # a 32-character secret; Django accepts it unmasked in cookie and header
    cookies = {"sessionid": session_key, "csrftoken": csrf}
    async with aiohttp.ClientSession(cookies=cookies) as http:
        for photo in photos:
            form = aiohttp.FormData()
            form.add_field("photo", photo, filename="photo.jpg", content_type="image/jpeg")
            started = time.perf_counter()
            async with http.post(f"{base}/analyze/", data=form,
                                 headers={"Accept": "application/json", "X-CSRFToken": csrf}) as response:
                answer = await response.json()
                if response.status != 201:
                    errors.append(f"upload {response.status}: {answer}")
                    continue
            uploaded = time.perf_counter()
            first = None
            ws_url = base.replace("http://", "ws://") + f"/ws/analysis/{answer['id']}/"
            async with http.ws_connect(ws_url, headers={"Origin": base}, max_msg_size=2 ** 20) as ws:
                async for message in ws:
                    event = json.loads(message.data)
                    if event["type"] == "scene" and first is None:
                        first = time.perf_counter()
                    if event["type"] in ("done", "error"):
                        break
            finished = time.perf_counter()
            if event["type"] == "error":
                errors.append(event["message"])
                continue
            results.append({"upload_ms": (uploaded - started) * 1000, "first_ms": (first - started) * 1000,
                            "done_ms": (finished - started) * 1000})


async def drive(base: str, keys: list[str], uploads: int) -> tuple[list, list, float]:
    photos = [[photo_bytes(u * 1000 + i) for i in range(uploads)] for u in range(len(keys))]
    results, errors = [], []
    started = time.perf_counter()
    await asyncio.gather(*(one_user(base, key, photos[u], results, errors) for u, key in enumerate(keys)))
    return results, errors, time.perf_counter() - started


def wait_for_port(port: int, timeout: float = 60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError("Daphne did not start")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=1, help="concurrent users (each uploads one photo at a time)")
    parser.add_argument("--uploads", type=int, default=10, help="uploads per user")
    parser.add_argument("--warmup", type=int, default=2, help="uploads by one user before timing (engine load)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (GEOWEB_DEVICE of the server)")
    parser.add_argument("--bundle", default=None, help="bundle directory or archive; default: the tiny bundle")
    args = parser.parse_args()

    data_dir = Path(tempfile.mkdtemp(prefix="geoweb-bench-upload-"))
    port = free_port()
    env = {**os.environ, "GEOWEB_DATA_DIR": str(data_dir), "GEOWEB_DEVICE": args.device,
           "DJANGO_SETTINGS_MODULE": "geoweb.settings", "GEOWEB_RATE_UPLOAD_IP": "0",
           "GEOWEB_UPLOAD_DAILY_QUOTA": "0", "GEOWEB_RATE_WEBSOCKET": "0", "GEOWEB_LOG_LEVEL": "WARNING",
           "GEOWEB_TILE_URL": ""}
    env.pop("REDIS_URL", None)
    env.pop("DATABASE_URL", None)
    server = None
    try:
        keys = prepare(data_dir, env, args.bundle, max(args.users, 1))
        server = subprocess.Popen([str(Path(PYTHON).with_name("daphne")), "-b", "127.0.0.1", "-p", str(port),
                                   "geoweb.asgi:application"], cwd=ROOT, env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_for_port(port)
        base = f"http://127.0.0.1:{port}"
        if args.warmup:
            _, errors, _ = asyncio.run(drive(base, keys[:1], args.warmup))
            if errors:
                raise SystemExit(f"warm-up failed: {errors[:3]}")
        results, errors, wall = asyncio.run(drive(base, keys[:args.users], args.uploads))
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        shutil.rmtree(data_dir, ignore_errors=True)

    import torch

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"device {args.device}, bundle {args.bundle or 'tiny-untrained (random weights)'}")
    print(f"users {args.users}, uploads per user {args.uploads}, completed {len(results)}, errors {len(errors)}, "
          f"wall {wall:.1f} s, throughput {len(results) / wall:.2f} analyses/s")
    for key, label in [("upload_ms", "upload (POST answered)"), ("first_ms", "upload -> first event"),
                       ("done_ms", "upload -> done")]:
        values = [r[key] for r in results]
        print(f"  {label:24s} p50 {percentile(values, 0.5):8.1f} ms   p95 {percentile(values, 0.95):8.1f} ms")
    if errors:
        print("errors:", errors[:5])


if __name__ == "__main__":
    main()

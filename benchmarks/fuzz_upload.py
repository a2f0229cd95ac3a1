"""Fuzz the image door and the upload endpoint with generated and mutated inputs; print what happened.

Each input goes through `images.clean_upload` and then through POST /analyze/ (Django's test client, a throwaway
SQLite database and media folder). Inputs: random bytes, valid JPEG/PNG/WebP/GIF/BMP/TIFF/HEIF seeds with random
byte flips, cuts and insertions, and PNG headers claiming random (often huge) sizes. Checked for every input: no
exception other than a clear refusal, no HTTP 5xx, no file left after a refusal, and, after each accepted upload
is deleted, no file left at all. Reported: counts per outcome, the slowest input, peak RSS.

    .venv/bin/python benchmarks/fuzz_upload.py --inputs 10000 --seed 1
"""
from __future__ import annotations

import argparse
import io
import os
import random
import resource
import struct
import sys
import tempfile
import time
import zlib
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _rss_mib() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _seeds() -> list[bytes]:
    from PIL import Image

    out = []
    for fmt, mode, kwargs in [("JPEG", "RGB", {}), ("JPEG", "RGB", {"progressive": True}), ("PNG", "RGBA", {}),
                              ("PNG", "L", {}), ("WEBP", "RGB", {}), ("GIF", "P", {}), ("BMP", "RGB", {}),
                              ("TIFF", "RGB", {}), ("HEIF", "RGB", {})]:
        image = Image.new(mode, (48, 36))
        image.putdata([(x * 7 % 256, x * 3 % 256, 90, 255)[:len(mode)] if len(mode) > 1 else x % 256
                       for x in range(48 * 36)])
        buffer = io.BytesIO()
        try:
            image.save(buffer, format=fmt, **kwargs)
        except (KeyError, OSError, ValueError):
            continue  # an encoder this Pillow build lacks
        out.append(buffer.getvalue())
    return out


def _png_claiming(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 256)) + chunk(b"IEND", b""))


def generate(rng: random.Random, seeds: list[bytes]) -> tuple[str, bytes]:
    roll = rng.random()
    if roll < 0.15:
        return "random", rng.randbytes(rng.randint(0, 4096))
    if roll < 0.25:
        return "header", _png_claiming(rng.choice([0, 1, 2**31 - 1, rng.randint(1, 200_000)]),
                                       rng.choice([0, 1, rng.randint(1, 200_000)]))
    if roll < 0.30:
        return "seed", rng.choice(seeds)
    data = bytearray(rng.choice(seeds))
    for _ in range(rng.randint(1, 6)):
        if not data:
            break
        at = rng.randrange(len(data))
        kind = rng.choice(("flip", "flip", "cut", "insert", "repeat"))
        if kind == "flip":
            data[at] ^= rng.randint(1, 255)
        elif kind == "cut":
            del data[at:]
        elif kind == "insert":
            data[at:at] = rng.randbytes(rng.randint(1, 64))
        else:
            data[at:at] = data[at:at + 64] * rng.randint(1, 50)
    return "mutated", bytes(data)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    data_dir = tempfile.mkdtemp(prefix="geoweb-fuzz-")
    os.environ.update(GEOWEB_DATA_DIR=data_dir, DJANGO_SETTINGS_MODULE="geoweb.settings", GEOWEB_LOG_LEVEL="ERROR",
                      GEOWEB_EMBEDDED_WORKER="0", GEOWEB_UPLOAD_DAILY_QUOTA="0", GEOWEB_RATE_UPLOAD_IP="0",
                      GEOWEB_ALLOWED_HOSTS="testserver")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    import logging

    logging.getLogger("django.request").setLevel(logging.ERROR)  # every refusal would print a warning
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.core.management import call_command
    from django.test import Client

    from core import images
    from predictor import policy
    from predictor.models import Analysis

    call_command("migrate", verbosity=0)
    user = get_user_model().objects.create_user(username="fuzz", password="a-long-fuzz-password-1")
    policy.accept_terms(user)
    client = Client()
    client.force_login(user)
    media = Path(settings.MEDIA_ROOT)

    def files() -> int:
        return sum(len(names) for _, _, names in os.walk(media)) if media.exists() else 0

    rng = random.Random(args.seed)
    seeds = _seeds()
    door, http, kinds, problems = Counter(), Counter(), Counter(), []
    slowest = (0.0, "", 0)
    slowest_warm = (0.0, "", 0)  # without the first 10 inputs, which pay for imports and first-use caches
    times: list[float] = []
    rss_start = _rss_mib()
    started = time.perf_counter()
    for number in range(args.inputs):
        kind, data = generate(rng, seeds)
        kinds[kind] += 1
        t0 = time.perf_counter()
        try:
            images.clean_upload(data)
            door["accepted"] += 1
        except images.RejectedImage as refusal:
            door[f"refused {refusal.status}"] += 1
        except Exception as error:  # noqa: BLE001 - this is what the fuzzer looks for
            door["CRASH"] += 1
            problems.append(f"input {number} ({kind}): door raised {error!r}")
        response = client.post("/analyze/", {"photo": SimpleUploadedFile("x.bin", data)},
                               HTTP_ACCEPT="application/json")
        elapsed = time.perf_counter() - t0
        times.append(elapsed)
        http[response.status_code] += 1
        if response.status_code >= 500:
            problems.append(f"input {number} ({kind}): HTTP {response.status_code}")
        if response.status_code == 201:
            for analysis in Analysis.objects.all():
                analysis.delete()
        if files():
            problems.append(f"input {number} ({kind}): {files()} file(s) left behind")
            for path in media.rglob("*"):
                if path.is_file():
                    path.unlink()
        if elapsed > slowest[0]:
            slowest = (elapsed, kind, len(data))
        if number >= 10 and elapsed > slowest_warm[0]:
            slowest_warm = (elapsed, kind, len(data))
    total = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"inputs: {args.inputs} in {total:.1f} s ({args.inputs / total:.0f}/s), seed {args.seed}")
    print("kinds:", dict(kinds))
    print("image door:", dict(door))
    print("HTTP statuses:", dict(sorted(http.items())))
    print(f"slowest input (door + endpoint): {slowest[0] * 1000:.1f} ms ({slowest[1]}, {slowest[2]} bytes); "
          f"after the first 10: {slowest_warm[0] * 1000:.1f} ms ({slowest_warm[1]}, {slowest_warm[2]} bytes)")
    ordered = sorted(times)
    print(f"time per input: p50 {ordered[len(ordered) // 2] * 1000:.1f} ms, "
          f"p99 {ordered[int(len(ordered) * 0.99)] * 1000:.1f} ms")
    print(f"RSS: {rss_start:.0f} MiB after setup, {_rss_mib():.0f} MiB at the end, peak {peak:.0f} MiB")
    print(f"problems: {len(problems)}")
    for line in problems[:20]:
        print("  ", line)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

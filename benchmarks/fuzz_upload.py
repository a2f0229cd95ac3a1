"""Fuzz the image door, the upload endpoint and (with --analyse) the worker with generated, mutated and oddly
shaped inputs; print what happened.

Each input goes through `images.clean_upload` and then through POST /analyze/ (Django's test client, a throwaway
SQLite database and media folder). Inputs: random bytes; valid JPEG/PNG/WebP/GIF/BMP/TIFF/HEIF seeds with random
byte flips, cuts and insertions; PNG headers claiming random (often huge) sizes; photos of random extreme shapes
(1 x N to N x 1, JPEG/PNG/WebP, random EXIF orientations); and the hostile corpus of tests/hostile_corpus.py (the
shapes of issue 14, CMYK, 16-bit, palettes with transparency, animations, bombs, polyglots). Checked for every input:
no exception other than a clear refusal, no HTTP 5xx, no file left after a refusal. With --analyse every accepted
upload is then analysed by the real embedded worker (a child process under its address-space cap, the demo model),
and each must end done or failed; afterwards, with every analysis deleted, no file may be left. Reported: counts per
outcome, the largest shapes, the slowest input, peak RSS of this (web) process and of the worker.

    .venv/bin/python benchmarks/fuzz_upload.py --inputs 10000 --seed 1 --analyse
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


def _shaped(rng: random.Random) -> bytes:
    """A photo of a random, often extreme, shape: 1 x N to N x 1, at most about 2 MP, with a random orientation."""
    from PIL import Image

    fmt = rng.choice(("JPEG", "PNG", "WEBP"))
    longest = {"JPEG": 65500, "PNG": 200_000, "WEBP": 16383}[fmt]
    long_side = min(longest, rng.choice((1, 2, 16, 300, 2048, 4000, 16383, 65500, 200_000)))
    short_side = max(1, min(long_side, rng.choice((1, 2, 10, long_side // 10, long_side // 2, long_side))))
    short_side = min(short_side, max(1, 2_000_000 // long_side))
    size = (long_side, short_side) if rng.random() < 0.5 else (short_side, long_side)
    mode = rng.choice(("RGB", "RGB", "L", "CMYK", "P", "RGBA")) if fmt != "WEBP" else rng.choice(("RGB", "RGBA"))
    if (fmt == "JPEG" and mode in ("P", "RGBA")) or (fmt == "PNG" and mode == "CMYK"):
        mode = "RGB"
    image = Image.new(mode, size, (90, 140, 200, 255)[:len(mode)] if mode not in ("L", "P") else 120)
    kwargs = {}
    if fmt in ("JPEG", "WEBP") and rng.random() < 0.5:
        exif = Image.Exif()
        exif[0x0112] = rng.randint(1, 8)
        kwargs["exif"] = exif.tobytes()
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def generate(rng: random.Random, seeds: list[bytes], corpus: list) -> tuple[str, bytes]:
    roll = rng.random()
    if roll < 0.12:
        return "random", rng.randbytes(rng.randint(0, 4096))
    if roll < 0.20:
        return "header", _png_claiming(rng.choice([0, 1, 2**31 - 1, rng.randint(1, 200_000)]),
                                       rng.choice([0, 1, rng.randint(1, 200_000)]))
    if roll < 0.25:
        return "seed", rng.choice(seeds)
    if roll < 0.35:
        return "shape", _shaped(rng)
    if roll < 0.38:
        return "corpus", rng.choice(corpus).data
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
    parser.add_argument("--analyse", action="store_true",
                        help="analyse accepted uploads with the real embedded worker (demo model, capped child)")
    args = parser.parse_args()

    data_dir = tempfile.mkdtemp(prefix="geoweb-fuzz-")
    os.environ.update(GEOWEB_DATA_DIR=data_dir, DJANGO_SETTINGS_MODULE="geoweb.settings", GEOWEB_LOG_LEVEL="ERROR",
                      GEOWEB_EMBEDDED_WORKER="1" if args.analyse else "0", GEOWEB_UPLOAD_DAILY_QUOTA="0",
                      GEOWEB_RATE_UPLOAD_IP="0", GEOWEB_ALLOWED_HOSTS="testserver", GEOWEB_DEVICE="cpu")
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
    from predictor import policy, services, worker
    from predictor.models import Analysis
    from tests import hostile_corpus

    call_command("migrate", verbosity=0)
    supervisor = None
    if args.analyse:
        call_command("ensure_demo_model", verbosity=0)
        supervisor = worker.start_embedded_worker()
    corpus = hostile_corpus.shape_cases() + hostile_corpus.earlier_cases()
    user = get_user_model().objects.create_user(username="fuzz", password="a-long-fuzz-password-1")
    policy.accept_terms(user)
    client = Client(raise_request_exception=False)  # a server error is counted as a 500, not a crash of the run
    client.force_login(user)
    media = Path(settings.MEDIA_ROOT)

    def files() -> int:
        return sum(len(names) for _, _, names in os.walk(media)) if media.exists() else 0

    rng = random.Random(args.seed)
    seeds = _seeds()
    door, http, kinds, problems = Counter(), Counter(), Counter(), []
    accepted_shapes: Counter = Counter()  # aspect ratio class of the accepted inputs (original size)
    worker_peak = {"VmHWM": 0.0, "VmPeak": 0.0}

    def sample_worker() -> None:
        pid = supervisor.pid if supervisor else None
        if pid:
            try:
                with open(f"/proc/{pid}/status") as handle:
                    for line in handle:
                        key, _, rest = line.partition(":")
                        if key in worker_peak:
                            worker_peak[key] = max(worker_peak[key], int(rest.split()[0]) / 1024)
            except OSError:
                pass
    slowest = (0.0, "", 0)
    slowest_warm = (0.0, "", 0)  # without the first 10 inputs, which pay for imports and first-use caches
    times: list[float] = []
    rss_start = _rss_mib()
    started = time.perf_counter()
    for number in range(args.inputs):
        kind, data = generate(rng, seeds, corpus)
        kinds[kind] += 1
        t0 = time.perf_counter()
        try:
            clean = images.clean_upload(data)
            door["accepted"] += 1
            ratio = max(clean.source_width, clean.source_height) / min(clean.source_width, clean.source_height)
            accepted_shapes["1:1 to 2:1" if ratio <= 2 else "2:1 to 4:1" if ratio <= 4 else "4:1 to 10:1"] += 1
        except images.RejectedImage as refusal:
            door[f"refused {refusal.status}"] += 1
            if "times longer than it is wide" in refusal.message:
                door["of which for their shape"] += 1
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
        if response.status_code == 201 and not args.analyse:
            for analysis in Analysis.objects.all():
                services.delete_analysis(analysis=analysis)
        if number % 50 == 0:
            sample_worker()
        if not args.analyse and files():
            problems.append(f"input {number} ({kind}): {files()} file(s) left behind")
            for path in media.rglob("*"):
                if path.is_file():
                    path.unlink()
        if elapsed > slowest[0]:
            slowest = (elapsed, kind, len(data))
        if number >= 10 and elapsed > slowest_warm[0]:
            slowest_warm = (elapsed, kind, len(data))
    total = time.perf_counter() - started
    outcomes = Counter()
    if args.analyse:
        analysed_from = time.perf_counter()
        while Analysis.objects.exclude(status__in=("done", "failed")).exists():
            sample_worker()
            if not supervisor.running:
                problems.append("the worker supervisor stopped")
                break
            time.sleep(0.5)
        sample_worker()
        outcomes = Counter(Analysis.objects.values_list("status", flat=True))
        for analysis in Analysis.objects.filter(status="failed"):
            problems.append(f"analysis {analysis.pk} failed: {analysis.error_message}")
        print(f"analysed {sum(outcomes.values())} accepted uploads in {time.perf_counter() - analysed_from:.0f} s "
              f"after the last upload: {dict(outcomes)}; worker restarts: {supervisor.restarts}")
        for analysis in Analysis.objects.all():
            services.delete_analysis(analysis=analysis)
        if files():
            problems.append(f"{files()} file(s) left after every analysis was deleted")
        worker.stop_embedded_worker()
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
    print("accepted shapes (longer : shorter side of the original):", dict(accepted_shapes))
    print(f"web process RSS: {rss_start:.0f} MiB after setup, {_rss_mib():.0f} MiB at the end, peak {peak:.0f} MiB")
    if args.analyse:
        print(f"worker process: peak RSS {worker_peak['VmHWM']:.0f} MiB, peak address space "
              f"{worker_peak['VmPeak']:.0f} MiB (cap {settings.WORKER_MEMORY_LIMIT_MB} MB)")
    print(f"problems: {len(problems)}")
    for line in problems[:20]:
        print("  ", line)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

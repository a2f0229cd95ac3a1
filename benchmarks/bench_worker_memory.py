"""Memory of the inference worker, per analysis: the real embedded worker (a child process under its address-space
cap, predictor/embedded_worker.py) analyses batches of B uploads, and the child's peak resident memory (VmHWM) and
peak address space (VmPeak) are read from /proc before it is stopped; a fresh child per batch size.

Photos: the door's largest stored copy (2048 x 2048, smooth random content), or with --shapes the extreme shapes the
door still accepts (10:1 and 1:10 panoramas, 2048 x 205). Model: a ResNet-50 ISN with the paper's 3,298 / 7,202 /
12,893 cells and random weights (--model resnet50), or the demo model `make run` installs (--model demo).
Everything else at its default (activation maps for 5 cells per partitioning, face detection on, CPU).

    .venv/bin/python benchmarks/bench_worker_memory.py --model resnet50 --batches 1,8,32
"""
from __future__ import annotations

import argparse
import io
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAPER_CELLS = ROOT.parent / "shared" / "data" / "geoestimation"


def _status(pid: int) -> dict[str, float]:
    values = {}
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            key, _, rest = line.partition(":")
            if key in ("VmPeak", "VmHWM", "VmRSS", "VmSize"):
                values[key] = int(rest.split()[0]) / 1024
    return values


def _photos(count: int, shapes: bool) -> list[bytes]:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    sizes = [(2048, 205), (205, 2048), (2048, 2048)] if shapes else [(2048, 2048)]
    out = []
    for n in range(count):
        width, height = sizes[n % len(sizes)]
        small = (rng.random((max(2, height // 16), max(2, width // 16), 3)) * 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(small).resize((width, height), Image.BICUBIC).save(buffer, format="JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("resnet50", "demo"), default="resnet50")
    parser.add_argument("--batches", default="1,8,32")
    parser.add_argument("--shapes", action="store_true", help="10:1 and 1:10 photos beside square ones")
    parser.add_argument("--memory-limit-mb", type=int, default=None, help="default: WORKER_MEMORY_LIMIT_MB")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (on CUDA the cap is not applied)")
    args = parser.parse_args()

    data_dir = tempfile.mkdtemp(prefix="geoweb-workermem-")
    os.environ.update(GEOWEB_DATA_DIR=data_dir, DJANGO_SETTINGS_MODULE="geoweb.settings", GEOWEB_LOG_LEVEL="WARNING",
                      GEOWEB_EMBEDDED_WORKER="1", GEOWEB_UPLOAD_DAILY_QUOTA="0", GEOWEB_DEVICE=args.device)
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from predictor import policy, registry, services, worker
    from predictor.models import Analysis

    call_command("migrate", verbosity=0)
    if args.memory_limit_mb is not None:
        settings.WORKER_MEMORY_LIMIT_MB = args.memory_limit_mb
    started = time.perf_counter()
    if args.model == "demo":
        from predictor.ml.isn import make_tiny_bundle

        bundle = make_tiny_bundle(Path(data_dir) / "build" / "tiny-untrained")
    else:
        from predictor.ml.bundle import random_model, save_model
        from predictor.ml.partitions import Partitioning

        partitionings = [Partitioning.from_csv(PAPER_CELLS / f"cells_50_{t}.csv", name=n)
                         for t, n in ((5000, "coarse"), (2000, "middle"), (1000, "fine"))]
        model = random_model(partitionings=partitionings, backbone="resnet50", scene_backbone="resnet50")
        bundle = save_model(Path(data_dir) / "build" / "isn-resnet50-random", model, name="isn-resnet50-random")
        del model
    registry.install_bundle(bundle, activate=True)
    print(f"model: {args.model} ({bundle.name}), built in {time.perf_counter() - started:.0f} s; "
          f"cap {settings.WORKER_MEMORY_LIMIT_MB} MB; uptime: {os.popen('uptime').read().strip()}")
    user = get_user_model().objects.create_user(username="mem", password="a-long-password-for-memory")
    policy.accept_terms(user)

    rows = []
    for batch in [int(b) for b in args.batches.split(",")]:
        settings.WORKER_BATCH = batch
        ids = [services.create_analysis(owner=user, data=photo).pk for photo in _photos(batch, args.shapes)]
        services.analysis_created.clear()
        t0 = time.perf_counter()
        supervisor = worker.start_embedded_worker()
        pid = None
        while time.perf_counter() - t0 < 3600:
            pid = supervisor.pid or pid
            if Analysis.objects.filter(pk__in=ids, status__in=("done", "failed")).count() == len(ids):
                break
            time.sleep(0.2)
        peak = _status(pid)
        elapsed = time.perf_counter() - t0
        statuses = list(Analysis.objects.filter(pk__in=ids).values_list("status", "timings"))
        worker.stop_embedded_worker()
        failed = sum(1 for status, _ in statuses if status != "done")
        sizes = sorted({t.get("batch_size") for status, t in statuses if status == "done"})
        rows.append((batch, peak["VmHWM"], peak["VmPeak"], failed, sizes, elapsed))
        print(f"batch {batch:3d}: worker peak RSS {peak['VmHWM']:7.0f} MB, peak address space {peak['VmPeak']:7.0f} MB, "
              f"{failed} failed, engine batch sizes {sizes}, {elapsed:.0f} s (child start included); "
              f"load {os.getloadavg()[0]:.1f}")
    if len(rows) > 1:
        (b0, r0, v0, *_), (b1, r1, v1, *_) = rows[0], rows[-1]
        print(f"per analysis in a batch: {(r1 - r0) / (b1 - b0):.0f} MB resident, {(v1 - v0) / (b1 - b0):.0f} MB of "
              f"address space (batch {b0} -> {b1})")
    print(f"web process (this one) peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Memory of the image door in the web process: how much one upload at the pixel limit (40 MP) grows the process
that cleans it, by kind of file. Each case runs in a fresh process (peak RSS is a high-water mark), the input built
and written to disk by an earlier process so that building it does not count.

    .venv/bin/python benchmarks/bench_door_memory.py
"""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = ("jpeg-8000x5000", "png-rgba-6324x6324", "png-rgb16-20000x2000", "png-grey-6324x6324")

MEASURE = r"""
import json, resource, sys, time
import django
django.setup()
from core import images
data = open(sys.argv[1], "rb").read()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started = time.perf_counter()
clean = images.clean_upload(data)
print(json.dumps({"grew_mb": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024,
                  "seconds": time.perf_counter() - started, "upload_mb": len(data) / 2**20,
                  "stored": f"{clean.width}x{clean.height}"}))
"""


def build(kind: str) -> bytes:
    import numpy as np
    from PIL import Image

    sys.path.insert(0, str(ROOT))
    from tests import hostile_corpus

    if kind == "jpeg-8000x5000":
        small = (np.random.default_rng(0).random((625, 1000, 3)) * 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(small).resize((8000, 5000)).save(buffer, "JPEG", quality=90)
        return buffer.getvalue()
    if kind == "png-rgba-6324x6324":
        row = (np.arange(6324 * 4, dtype=np.uint32) % 251).astype(np.uint8).tobytes()
        return hostile_corpus.png_rows(6324, 6324, colour_type=6, row=row)
    if kind == "png-rgb16-20000x2000":
        row = (np.arange(20000 * 3, dtype=np.uint32) % 7).astype(">u2").tobytes()
        return hostile_corpus.png_rows(20000, 2000, bit_depth=16, colour_type=2, row=row)
    row = (np.arange(6324, dtype=np.uint32) % 251).astype(np.uint8).tobytes()
    return hostile_corpus.png_rows(6324, 6324, colour_type=0, row=row)


def main() -> int:
    folder = Path(tempfile.mkdtemp(prefix="geoweb-door-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("GEOWEB_")}
    env.update(DJANGO_SETTINGS_MODULE="geoweb.settings", GEOWEB_DATA_DIR=str(folder), GEOWEB_LOG_LEVEL="ERROR",
               PYTHONPATH=str(ROOT))
    print(f"load average {os.getloadavg()[0]:.1f}")
    for kind in CASES:
        path = folder / f"{kind}.bin"
        path.write_bytes(build(kind))
        result = subprocess.run([sys.executable, "-c", MEASURE, str(path)], cwd=ROOT, env=env, capture_output=True,
                                text=True, timeout=600)
        if result.returncode:
            print(f"{kind}: failed\n{result.stderr[-2000:]}")
            continue
        report = json.loads(result.stdout.strip().splitlines()[-1])
        print(f"{kind}: {report['upload_mb']:.1f} MB upload -> stored {report['stored']}, door {report['seconds']:.1f} s, "
              f"web process grew {report['grew_mb']:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())

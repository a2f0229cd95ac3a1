"""GeoCLIP serving throughput, end to end (JPEG bytes in -> Predictions out), beside the ISN figures.

The bundle is built here: the geoclip wheel's real location encoder, image MLP and whole 100k-point gallery, a CLIP
ViT-L/14 vision tower of the real shape with random weights (throughput does not depend on the weights), and the
paper's three partitionings when --cells is given (else small generated ones). Prints images/s per batch size, the
single-photo latency and, on CUDA, the peak GPU memory.

    .venv/bin/python benchmarks/bench_geoclip.py --device cpu --batch-sizes 1,4 --images 8
    .venv/bin/python benchmarks/bench_geoclip.py --device cuda --batch-sizes 1,8,32,64,128,256 --compile \
        --cells ../shared/data/geoestimation
"""
from __future__ import annotations

import argparse
import io
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from predictor.ml.engine import InferenceEngine  # noqa: E402
from predictor.ml.geoclip import build_vision_tower, read_wheel, save_geoclip_bundle  # noqa: E402
from predictor.ml.kinds import load_bundle  # noqa: E402
from predictor.ml.network import GeoNetwork  # noqa: E402
from predictor.ml.partitions import Partitioning, tiny_partitionings  # noqa: E402
from predictor.ml.scenes import SceneMapping  # noqa: E402

# openai/clip-vit-large-patch14's vision tower: the shape GeoCLIP runs on.
VIT_L14 = {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24, "num_attention_heads": 16,
           "patch_size": 14, "image_size": 224, "projection_dim": 768}
WHEEL = Path(os.environ.get("GEOWEB_GEOCLIP_WHEEL") or ROOT / ".cache/geoclip/geoclip-1.3.0-py3-none-any.whl")


def photos(count: int, size: tuple[int, int]) -> list[bytes]:
    rng = np.random.default_rng(0)
    out = []
    for _ in range(count):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(buffer, format="JPEG")
        out.append(buffer.getvalue())
    return out


def build(folder: Path, cells: Path | None) -> Path:
    if cells is not None:
        partitionings = [Partitioning.from_csv(cells / f"cells_50_{t}.csv") for t in (5000, 2000, 1000)]
    else:
        partitionings = tiny_partitionings(0)
    vision = build_vision_tower(VIT_L14)
    return save_geoclip_bundle(folder / "geoclip-bench", name="geoclip-bench", release=read_wheel(WHEEL),
                               vision_config=VIT_L14, vision_state=vision.state_dict(), partitionings=partitionings,
                               scene_network=GeoNetwork("resnet50", [365]),
                               scene_mapping=SceneMapping.load_default(), clip_source="random ViT-L/14 (benchmark)",
                               untrained=True, overwrite=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-sizes", default="1,8,32,64,128,256")
    parser.add_argument("--images", type=int, default=0, help="photos per batch size (default 4 x batch, >= 8)")
    parser.add_argument("--image-size", default="1024x768")
    parser.add_argument("--cells", type=Path, help="folder with the paper's cells_50_{5000,2000,1000}.csv")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--latency-runs", type=int, default=5)
    args = parser.parse_args()
    if not WHEEL.is_file():
        sys.exit(f"GeoCLIP wheel not found at {WHEEL}: run `make geoclip-wheel` or set GEOWEB_GEOCLIP_WHEEL")
    width, height = (int(v) for v in args.image_size.split("x"))
    with tempfile.TemporaryDirectory() as scratch:
        started = time.perf_counter()
        model = load_bundle(build(Path(scratch), args.cells), device=args.device)
        print(f"# bundle built and loaded in {time.perf_counter() - started:.1f} s "
              f"(gallery {len(model.gallery)} points)")
    sizes = [int(v) for v in args.batch_sizes.split(",")]
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or "cpu"
    print(f"# device {args.device} ({device_name}, {torch.get_num_threads()} threads), torch {torch.__version__}, "
          f"ViT-L/14 random weights, photos {width}x{height} JPEG, compile={args.compile}")
    print("| batch | images/s | peak GPU memory |")
    print("|---|---|---|")
    for batch in sizes:
        engine = InferenceEngine(model, device=args.device, max_batch_size=batch, max_wait_ms=20,
                                 compile=args.compile, **({"batch_buckets": (batch,)} if args.compile else {}))
        try:
            blobs = photos(args.images or max(8, 4 * batch), (width, height))
            engine.predict_many(blobs[:batch])  # warm-up (and compilation)
            if args.device == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            results = engine.predict_many(blobs)
            elapsed = time.perf_counter() - start
            failed = sum(isinstance(r, Exception) for r in results)
            memory = (f"{torch.cuda.max_memory_allocated() / 2**30:.1f} GiB" if args.device == "cuda" else "n/a")
            print(f"| {batch} | {len(blobs) / elapsed:.1f} | {memory} |" + (f" ({failed} failed)" if failed else ""))
        finally:
            engine.close()
    engine = InferenceEngine(model, device=args.device, max_batch_size=1, max_wait_ms=0)
    try:
        blob = photos(1, (width, height))
        engine.predict_many(blob)
        times = []
        for _ in range(args.latency_runs):
            start = time.perf_counter()
            engine.predict_many(blob)
            times.append((time.perf_counter() - start) * 1000)
        print(f"single-photo latency: p50 {statistics.median(times):.0f} ms, min {min(times):.0f} ms "
              f"over {len(times)} runs")
    finally:
        engine.close()


if __name__ == "__main__":
    main()

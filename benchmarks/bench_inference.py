"""Throughput and latency of ISN(M, f*, S3) serving, end to end (JPEG bytes in -> Predictions out).

Rows printed, per batch size:
  engine    the InferenceEngine (dynamic batching; on CUDA bf16 + channels_last + nvJPEG, --compile for buckets)
  model     (a) the same networks alone, inputs already on the device (compiled on CUDA unless --no-compile)
  naive     (b) eager fp32, one photo at a time: decode, crops, scene net, geo net, hierarchy
and the single-photo latency p50 of the engine. Random weights (throughput does not depend on them).

    .venv/bin/python benchmarks/bench_inference.py --device cpu --batch-sizes 1,2,4 --images 8
    .venv/bin/python benchmarks/bench_inference.py --device cuda --batch-sizes 1,8,32,64,128,256 --compile
    .venv/bin/python benchmarks/bench_inference.py --kind vit --backbone vit_b_16 [--segmentation deeplabv3_resnet50]

With --kind vit the model is one multi-task ViT (its own scene head; (a) runs it on the crops, plus the
segmentation network on the crops and the whole photo with --segmentation), and a last line states what the
segmentation network costs per upload on its own.
"""
from __future__ import annotations

import argparse
import io
import platform
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from predictor.ml.isn import random_model  # noqa: E402
from predictor.ml.engine import InferenceEngine, resolve_device  # noqa: E402
from predictor.ml.partitions import Partitioning  # noqa: E402

PAPER_CELLS = ROOT.parent / "shared" / "data" / "geoestimation"


def synthetic_jpegs(count: int, width: int, height: int, seed: int = 0) -> list[bytes]:
    """Smooth random photos (JPEG quality 90): realistic decode cost, unlike flat colour."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        small = (rng.random((height // 16, width // 16, 3)) * 255).astype(np.uint8)
        image = Image.fromarray(small).resize((width, height), Image.BICUBIC)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


def load_partitionings(source: str) -> list[Partitioning]:
    if source == "paper":
        if not PAPER_CELLS.is_dir():
            raise SystemExit(f"{PAPER_CELLS} not found: pass --cells tiny")
        return [Partitioning.from_csv(PAPER_CELLS / f"cells_50_{t}.csv", name=n)
                for t, n in ((5000, "coarse"), (2000, "middle"), (1000, "fine"))]
    from predictor.ml.partitions import tiny_partitionings

    return tiny_partitionings(0)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_engine(engine: InferenceEngine, photos: list[bytes], clients: int) -> float:
    """Images/s with `clients` threads submitting concurrently (the engine batches across them)."""
    engine.predict_many(photos[: min(len(photos), engine.max_batch_size)])  # warm-up
    start = time.perf_counter()
    chunks = [photos[i::clients] for i in range(clients)]
    errors = []

    def client(chunk):
        for result in engine.predict_many(chunk):
            if isinstance(result, Exception):
                errors.append(result)

    threads = [threading.Thread(target=client, args=(c,)) for c in chunks]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"{len(errors)} photos failed, e.g. {errors[0]}")
    return len(photos) / (time.perf_counter() - start)


def _rate(value: float) -> str:
    """Images/s with one decimal, or three significant digits below 10 (a ViT-B on a laptop CPU)."""
    return f"{value:.1f}" if value >= 10 else f"{value:.3g}"


def _timed(step, device, repeats: int) -> float:
    """Seconds per call of `step` after three warm-up calls."""
    for _ in range(3):
        step()
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    sync(device)
    return (time.perf_counter() - start) / repeats


def _autocast(device, precision: str):
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    return (torch.autocast(device_type=device.type, dtype=dtype) if dtype else torch.autocast(
        device_type=device.type, enabled=False))


def bench_vit_model_only(model, device, batch: int, repeats: int, compile_: bool, precision: str) -> float:
    """(a) for a vit model: its served networks (ViT on the crops, segmentation on the whole photos) on tensors
    already on the device."""
    k = model.crops.num_crops
    inputs = {"crops": torch.randn(batch * k, 3, 224, 224, device=device),
              "whole photo": torch.randn(batch, 3, 224, 224, device=device)}
    served = [(torch.compile(s.module, mode="reduce-overhead" if device.type == "cuda" else "default", dynamic=False)
               if compile_ else s.module, s.input) for s in model.served_networks()]

    def step():
        for module, name in served:
            module(inputs[name])

    with torch.inference_mode(), _autocast(device, precision):
        return batch / _timed(step, device, repeats)


def segmentation_cost_ms(model, device, precision: str, repeats: int) -> tuple[float, float]:
    """(ms of the segmentation network per upload: on the k crops the ViT reads and on the whole photo for the
    overlay, ms of the rest: the ViT on the k crops), eager, batch 1."""
    k = model.crops.num_crops
    crops = torch.randn(k, 3, 224, 224, device=device)
    photo = torch.randn(1, 3, 224, 224, device=device)
    with torch.inference_mode(), _autocast(device, precision):
        seg = _timed(lambda: (model.segmenter(crops), model.segmenter(photo)), device, repeats)
        x = model.served.network_input(crops)
        vit = _timed(lambda: model.network(x), device, repeats)
    return seg * 1000, vit * 1000


def bench_model_only(model, device, batch: int, repeats: int, compile_: bool, precision: str) -> float:
    """(a) Images/s of scene net + routed geo nets on tensors already on the device (photos spread over concepts)."""
    k = model.crops.num_crops
    crops = torch.randn(batch * k, 3, 224, 224, device=device)
    scene = torch.randn(batch, 3, 224, 224, device=device)
    networks = [model.scene.network, *model.isn.networks.values()]
    if device.type == "cuda":
        crops = crops.contiguous(memory_format=torch.channels_last)
        scene = scene.contiguous(memory_format=torch.channels_last)
    runners = {id(n): (torch.compile(n, mode="reduce-overhead" if device.type == "cuda" else "default",
                                     dynamic=False) if compile_ else n) for n in networks}
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    autocast = (torch.autocast(device_type=device.type, dtype=dtype) if dtype else torch.autocast(
        device_type=device.type, enabled=False))
    # Routing as in serving: each photo's crops go to one of the concept networks.
    geo = list(model.isn.networks.values())
    splits = np.array_split(np.arange(batch), len(geo))

    def step():
        runners[id(model.scene.network)](scene)
        for network, photos in zip(geo, splits):
            if len(photos):
                runners[id(network)](crops[photos[0] * k:(photos[-1] + 1) * k])

    with torch.inference_mode(), autocast:
        return batch / _timed(step, device, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--scene-backbone", default="resnet50")
    parser.add_argument("--cells", choices=["paper", "tiny"], default="paper")
    parser.add_argument("--batch-sizes", default="1,8,32,64,128,256")
    parser.add_argument("--images", type=int, default=0, help="photos per batch size (default 4 x batch, >= 16)")
    parser.add_argument("--image-size", default="1024x768")
    parser.add_argument("--compile", action="store_true", help="compile the engine's networks (batch buckets)")
    parser.add_argument("--no-compile", action="store_true", help="(a) eager instead of compiled")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--latency-runs", type=int, default=15)
    parser.add_argument("--skip-naive", action="store_true")
    parser.add_argument("--model-repeats", type=int, help="(a) batches timed (default max(2, 32 / batch))")
    parser.add_argument("--kind", choices=["isn", "vit"], default="isn",
                        help="isn (scene net + ISNs, --backbone resnet50) or vit (--backbone vit_b_16)")
    parser.add_argument("--segmentation", metavar="ARCH",
                        help="vit: with a segmentation network of this architecture (e.g. deeplabv3_resnet50)")
    args = parser.parse_args()

    device = resolve_device(args.device)
    width, height = (int(v) for v in args.image_size.split("x"))
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    precision = args.precision if args.precision != "auto" else ("bf16" if device.type == "cuda" else "fp32")
    scene = (f"own scene head, segmentation {args.segmentation or 'none'}" if args.kind == "vit"
             else f"scene {args.scene_backbone}")
    print(f"# device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else platform.processor() or 'cpu'}, "
          f"{torch.get_num_threads()} threads), torch {torch.__version__}, kind {args.kind}, backbone {args.backbone}, "
          f"{scene}, cells {args.cells}, photos {width}x{height} JPEG, precision {precision}")
    partitionings = load_partitionings(args.cells)
    if args.kind == "vit":
        from predictor.ml.vit import random_vit_model

        model = random_vit_model(partitionings=partitionings, backbone=args.backbone,
                                 segmentation_arch=args.segmentation, name="bench", device=device)
        model_only = bench_vit_model_only
    else:
        if args.segmentation:
            parser.error("--segmentation goes with --kind vit")
        model = random_model(partitionings=partitionings, backbone=args.backbone,
                             scene_backbone=args.scene_backbone, name="bench", device=device)
        model_only = bench_model_only
    photos_all = synthetic_jpegs(max(max(batch_sizes) * 4, 16) if not args.images else args.images, width, height)
    compile_model = device.type == "cuda" and not args.no_compile

    print("| batch | engine img/s | (a) model only img/s | engine / (a) |")
    print("|---|---|---|---|")
    buckets = tuple(sorted(set(batch_sizes)))
    engine = InferenceEngine(model, device=device, max_batch_size=max(batch_sizes), max_wait_ms=10,
                             precision=precision, compile=args.compile, batch_buckets=buckets)
    for batch in batch_sizes:
        engine.max_batch_size = batch
        count = args.images or max(16, 4 * batch)
        photos = (photos_all * (count // len(photos_all) + 1))[:count]
        engine_rate = bench_engine(engine, photos, clients=min(4, batch))
        model_rate = model_only(model, device, batch, repeats=args.model_repeats or max(2, 32 // batch), compile_=compile_model,
                                      precision=precision)
        print(f"| {batch} | {_rate(engine_rate)} | {_rate(model_rate)} | {engine_rate / model_rate:.2f} |", flush=True)

    engine.max_batch_size = 1
    latencies = []
    for i in range(args.latency_runs + 2):
        start = time.perf_counter()
        engine.submit(photos_all[i % len(photos_all)]).result()
        latencies.append((time.perf_counter() - start) * 1000)
    latencies = latencies[2:]
    print(f"single-photo latency (engine, {precision}): p50 {statistics.median(latencies):.1f} ms, "
          f"min {min(latencies):.1f} ms over {len(latencies)} runs")
    engine.close()

    if not args.skip_naive:
        naive = InferenceEngine(model, device=device, max_batch_size=1, max_wait_ms=0, precision="fp32",
                                gpu_decode=False, decode_workers=1, start=False)
        count = min(len(photos_all), 16)
        naive.predict_batch([photos_all[0]])
        sync(device)
        start = time.perf_counter()
        for photo in photos_all[:count]:
            result = naive.predict_batch([photo])[0]
            if isinstance(result, Exception):
                raise result
        sync(device)
        print(f"(b) naive eager fp32 batch-1 loop: {count / (time.perf_counter() - start):.1f} img/s")
        naive.close()
    if device.type == "cuda":
        print(f"GPU memory per worker: peak allocated {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB, "
              f"reserved {torch.cuda.max_memory_reserved(device) / 2**30:.2f} GiB")
    modules = [s.module for s in model.served_networks()]
    weights = sum(p.numel() * p.element_size() for p in {id(p): p for m in modules for p in m.parameters()}.values())
    print(f"weights: {weights / 2**20:.0f} MiB (fp32)")
    if args.kind == "vit" and model.segmenter is not None:
        seg_ms, vit_ms = segmentation_cost_ms(model, device, precision, repeats=max(2, args.latency_runs // 3))
        print(f"segmentation network per upload ({args.segmentation} on {model.crops.num_crops} crops + the whole "
              f"photo, batch 1, eager {precision}): {seg_ms:.1f} ms, beside {vit_ms:.1f} ms for the ViT itself")


if __name__ == "__main__":
    main()

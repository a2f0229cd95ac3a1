"""Training throughput (images/s) of the GeoWeb training pipeline, split into where the time goes:

- loader: shards -> JPEG decode -> RandomResizedCrop(224)+flip -> batches (DataLoader workers), no model;
- model:  forward + summed cross-entropy + backward + SGD step on random tensors already on the device;
- train:  both together, as `manage.py train` runs them.

The slowest of loader and model bounds the training rate. Shards are built first from synthetic photo-like images
(or from `--photos DIR`), resized to the 320 px short side the real preprocessing writes.

    python benchmarks/bench_training.py --device cuda --batch-size 256 --workers 15 --steps 50
    python benchmarks/bench_training.py --device cpu --batch-size 8 --workers 2 --steps 5      # this machine
    python benchmarks/bench_training.py --backbone vit_b_16 [--segmentation] ...   # the multi-task ViT (vit kind)

With a ViT backbone the loss adds the scene head's cross-entropy (3 classes); with --segmentation the shards carry
a segmentation map per photo (made by the tiny segmenter: its cost is preprocessing, not training) and the network
takes RGB + map through its two patch embeddings.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFilter
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from predictor.ml.network import GeoNetwork  # noqa: E402
from predictor.ml.vit_network import ViTGeoNetwork, is_vit  # noqa: E402
from predictor.ml.partitions import Partitioning  # noqa: E402
from predictor.ml.train.datasets import ExifFolderSource  # noqa: E402
from predictor.ml.train.shards import (ShardStream, collate_samples, decode_batch, train_transform,  # noqa: E402
                                       write_shards)

PAPER_HEADS = (3298, 7202, 12893)


def photo_like(rng: np.random.Generator, width: int = 640, height: int = 480) -> Image.Image:
    """Smooth gradients, shapes and mild noise: compresses like a photo, unlike pure noise."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([(x / width) * rng.uniform(80, 255), (y / height) * rng.uniform(80, 255),
                     np.full_like(x, rng.uniform(0, 255))], axis=-1)
    image = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(25):
        x0, y0 = rng.integers(0, width), rng.integers(0, height)
        draw.ellipse([x0, y0, x0 + rng.integers(10, 200), y0 + rng.integers(10, 200)],
                     fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    image = image.filter(ImageFilter.GaussianBlur(1.5))
    noisy = np.asarray(image, dtype=np.float32) + rng.normal(0, 6, (height, width, 3))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def build_shards(folder: Path, count: int, photos_dir: str | None, segmentation: bool = False) -> dict:
    rng = np.random.default_rng(0)
    real = [p.image for p in ExifFolderSource(photos_dir)] if photos_dir else []

    def photos():
        for i in range(count):
            image = real[i % len(real)] if real else photo_like(rng)
            yield image, float(rng.uniform(-60, 60)), float(rng.uniform(-180, 180)), f"bench-{i}"

    if segmentation:
        from predictor.ml.segmentation import PhotoSegmenter, SegmentationNetwork
        from predictor.ml.train.shards import ShardWriter
        writer = ShardWriter(folder, samples_per_shard=max(1, count // 16),
                             segmenter=PhotoSegmenter(SegmentationNetwork("tiny", 21)))
        for image, lat, lon, image_id in photos():
            writer.add(image, lat, lon, image_id)
        report = writer.close()
    else:
        report = write_shards(photos(), folder, samples_per_shard=max(1, count // 16))
    return {"images": report.written, "bytes_per_image": report.bytes_per_image}


def whole_earth(heads: tuple[int, ...]) -> list[Partitioning]:
    """The 96 level-2 cells (labels are walked from level 2): every coordinate has a class. The model keeps the
    paper's head sizes; labels only need to be valid indices."""
    import s2sphere
    tokens = []
    for face in range(6):
        cell = s2sphere.CellId.from_face_pos_level(face, 0, 0)
        child, end = cell.child_begin(2), cell.child_end(2)
        while child != end:
            tokens.append(child.to_token())
            child = child.next()
    n = len(tokens)
    return [Partitioning(name=f"p{i}", tokens=tokens, counts=[1] * n, lat=[0.0] * n, lon=[0.0] * n)
            for i in range(len(heads))]


def loader_for(folder: Path, args, partitionings) -> DataLoader:
    if args.segmentation:
        from predictor.ml.train.vit_data import PairTransform
        stream = ShardStream(folder, partitionings=partitionings, transform=PairTransform(args.size, train=True),
                             shuffle=True, shuffle_buffer=256, segmentation=True)
    else:
        stream = ShardStream(folder, partitionings=partitionings, transform=None if args.gpu_decode else
                             train_transform(args.size), shuffle=True, shuffle_buffer=256, encoded=args.gpu_decode)
    return DataLoader(stream, batch_size=args.batch_size, num_workers=args.workers, collate_fn=collate_samples,
                      pin_memory=args.device == "cuda", prefetch_factor=4 if args.workers else None,
                      persistent_workers=args.workers > 0)


def batches_forever(loader):
    while True:
        produced = False
        for batch in loader:
            produced = True
            yield batch
        if not produced:
            raise RuntimeError("the shards yielded no labelled sample")


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def to_device(images, args):
    if isinstance(images, list):
        images = decode_batch(images, device=args.device, size=args.size)
    else:
        images = images.to(args.device, non_blocking=True)
    return images.contiguous(memory_format=torch.channels_last) if args.channels_last else images


def measure_loader(loader, args) -> float:
    iterator = batches_forever(loader)
    for _ in range(args.warmup):
        to_device(next(iterator)[0], args)
    sync(args.device)
    start, seen = time.perf_counter(), 0
    for _ in range(args.steps):
        images = to_device(next(iterator)[0], args)
        seen += images.shape[0]
    sync(args.device)
    return seen / (time.perf_counter() - start)


def make_model(args):
    if is_vit(args.backbone):
        model = ViTGeoNetwork(args.backbone, list(args.heads), scene_classes=3,
                              seg_channels=3 if args.segmentation else 0, image_size=args.size).to(args.device)
    else:
        model = GeoNetwork(args.backbone, list(args.heads)).to(args.device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    step_model = torch.compile(model) if args.compile else model
    autocast = torch.autocast(args.device, dtype=torch.bfloat16, enabled=args.precision == "bf16")

    def step(images, targets):
        with autocast:
            logits = step_model(images)
            # A ViT's last output is its scene head, scored against the last target column (lambda 1).
            loss = sum(F.cross_entropy(head.float(), targets[:, p]) for p, head in enumerate(logits))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return model, step


def random_targets(args, n):
    heads = [*args.heads, 3] if is_vit(args.backbone) else list(args.heads)
    return torch.stack([torch.randint(0, h, (n,), device=args.device) for h in heads], dim=1)


def measure_model(step, args) -> float:
    images = torch.randn(args.batch_size, 6 if args.segmentation else 3, args.size, args.size, device=args.device)
    if args.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    targets = random_targets(args, args.batch_size)
    for _ in range(args.warmup):
        step(images, targets)
    sync(args.device)
    start = time.perf_counter()
    for _ in range(args.steps):
        step(images, targets)
    sync(args.device)
    return args.steps * args.batch_size / (time.perf_counter() - start)


def measure_training(loader, step, args) -> float:
    iterator = batches_forever(loader)
    for _ in range(args.warmup):
        images = to_device(next(iterator)[0], args)
        step(images, random_targets(args, images.shape[0]))
    sync(args.device)
    start, seen = time.perf_counter(), 0
    for _ in range(args.steps):
        images = to_device(next(iterator)[0], args)
        step(images, random_targets(args, images.shape[0]))
        seen += images.shape[0]
    sync(args.device)
    return seen / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--heads", type=int, nargs="+", default=list(PAPER_HEADS))
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--images", type=int, default=2048, help="images in the benchmark shards")
    parser.add_argument("--photos", help="build the shards from this folder of EXIF-GPS photos instead")
    parser.add_argument("--shards", help="use an existing shard folder instead of building one")
    parser.add_argument("--precision", choices=["bf16", "fp32"])
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--gpu-decode", action="store_true", help="nvJPEG decode + augmentation on the GPU")
    parser.add_argument("--threads", type=int, help="torch CPU threads for the model")
    parser.add_argument("--segmentation", action="store_true",
                        help="ViT backbones: shards with segmentation maps, RGB + map through two patch embeddings")
    args = parser.parse_args()
    args.precision = args.precision or ("bf16" if args.device == "cuda" else "fp32")
    args.channels_last = args.device == "cuda"
    if args.segmentation and (not is_vit(args.backbone) or args.gpu_decode):
        parser.error("--segmentation needs a ViT backbone (vit_b_16, vit_s_16, vit_tiny) and no --gpu-decode")
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory(prefix="bench-shards-") as scratch:
        folder = Path(args.shards) if args.shards else Path(scratch) / "shards"
        if not args.shards:
            started = time.perf_counter()
            built = build_shards(folder, args.images, args.photos, segmentation=args.segmentation)
            print(f"shards: {built['images']} images, {built['bytes_per_image']:.0f} bytes/image "
                  f"(built in {time.perf_counter() - started:.1f} s)")
        partitionings = whole_earth(tuple(args.heads))
        loader = loader_for(folder, args, partitionings)
        device_name = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
        print(f"device: {device_name}; {args.backbone}{' RGB+segmentation' if args.segmentation else ''} heads "
              f"{args.heads}{' + scene 3' if is_vit(args.backbone) else ''}, batch {args.batch_size}, {args.size} px, "
              f"{args.precision}, channels_last={args.channels_last}, compile={args.compile}, "
              f"workers={args.workers}, gpu_decode={args.gpu_decode}, steps={args.steps}")
        rates = {"loader": measure_loader(loader, args)}
        _, step = make_model(args)
        rates["model"] = measure_model(step, args)
        rates["train"] = measure_training(loader, step, args)
    for name, rate in rates.items():
        print(f"{name:>6}: {rate:9.1f} img/s" if rate >= 10 else f"{name:>6}: {rate:9.3g} img/s")
    limit = "data loading" if rates["loader"] < rates["model"] else "the model (GPU/CPU compute)"
    print(f"limit: {limit}")


if __name__ == "__main__":
    main()

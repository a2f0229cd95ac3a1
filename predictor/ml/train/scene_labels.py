"""Scene labels for training images (Places365 -> S3 probabilities per image, as a CSV) and the scene filtering
that splits a training set into the three ISN subsets (indoor, natural, urban).

Filtering rule (the paper's threshold could not be verified): an image belongs to the subset of its most probable
S3 concept (the same argmax that routes photos to an ISN at inference), optionally only when that probability is
at least `min_probability`. With the default 0 every image lands in exactly one subset.
"""
from __future__ import annotations

import csv
import io
import json
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from predictor.ml.prediction import S3_CONCEPTS
from predictor.ml.preprocess import IMAGENET_MEAN, IMAGENET_STD
from predictor.ml.train.holdout import SampleListWriter
from predictor.ml.train.shards import INDEX_FILE, SEGMENTATION_KEY, iterate_tar_samples, read_index

CSV_COLUMNS = ["id", "lat", "lon", *(f"p_{c}" for c in S3_CONCEPTS), "s3_label", "top365", "top365_probability"]


def scene_input(image: Image.Image, size: int = 224) -> torch.Tensor:
    """The whole photo resized to size x size (no crop), ImageNet-normalised: what the scene classifier sees."""
    array = np.asarray(image.convert("RGB").resize((size, size), Image.BILINEAR), dtype=np.float32) / 255.0
    tensor = torch.from_numpy(array).permute(2, 0, 1)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (tensor - mean) / std


def shard_photos(folder: str | Path) -> Iterator[tuple[Image.Image, float, float, str]]:
    index = read_index(folder)
    for shard in index["shards"]:
        for jpeg, meta in iterate_tar_samples(Path(folder) / shard["name"]):
            yield Image.open(io.BytesIO(jpeg)).convert("RGB"), meta["lat"], meta["lon"], meta["id"]


@torch.no_grad()
def label_scenes(photos, *, scene_model: Callable[[torch.Tensor], torch.Tensor], mapping, output: str | Path,
                 batch_size: int = 64, device: str = "cpu", size: int = 224, progress: bool = False) -> int:
    """Run `scene_model` (images [N,3,S,S] -> Places365 probabilities [N,365], or a tuple starting with them)
    over (image, lat, lon, id) items and write one CSV row per image. Returns the number of rows."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    if progress:
        from tqdm import tqdm
        photos = tqdm(photos, desc="scenes", unit="img")
    written = 0
    with open(output, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        batch: list[tuple[torch.Tensor, float, float, str]] = []

        def flush():
            nonlocal written
            images = torch.stack([b[0] for b in batch]).to(device)
            p365 = scene_model(images)
            if isinstance(p365, (tuple, list)):
                p365 = p365[0]
            p365 = p365.float().cpu().numpy()
            s3 = mapping.s3_probabilities(p365)
            for (_, lat, lon, image_id), probs, scene in zip(batch, s3, p365):
                top = int(np.argmax(scene))
                writer.writerow([image_id, lat, lon, *(f"{p:.6f}" for p in probs), S3_CONCEPTS[int(np.argmax(probs))],
                                 mapping.categories[top], f"{scene[top]:.6f}"])
                written += 1
            batch.clear()

        for image, lat, lon, image_id in photos:
            batch.append((scene_input(image, size), lat, lon, image_id))
            if len(batch) >= batch_size:
                flush()
        if batch:
            flush()
    return written


def read_scene_labels(path: str | Path) -> dict[str, np.ndarray]:
    """{image id: [p_indoor, p_natural, p_urban]} from a label_scenes CSV."""
    labels = {}
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {f"p_{c}" for c in S3_CONCEPTS} - set(reader.fieldnames or [])
        if "id" not in (reader.fieldnames or []) or missing:
            raise ValueError(f"{path}: not a label_scenes CSV (columns {reader.fieldnames})")
        for row in reader:
            labels[row["id"]] = np.array([float(row[f"p_{c}"]) for c in S3_CONCEPTS])
    return labels


def subset_ids(path: str | Path, *, concept: str, min_probability: float = 0.0) -> set[str]:
    """Ids of the images that train the ISN of `concept` (argmax concept, probability >= min_probability)."""
    if concept not in S3_CONCEPTS:
        raise ValueError(f"concept must be one of {S3_CONCEPTS}, not {concept!r}")
    c = S3_CONCEPTS.index(concept)
    return {image_id for image_id, p in read_scene_labels(path).items()
            if int(np.argmax(p)) == c and p[c] >= min_probability}


def write_subset_shards(source: str | Path, destination: str | Path, *, keep_ids: set[str]) -> int:
    """Copy the samples whose id is in keep_ids into a new shard folder (no re-encoding); returns the count.

    A concept's own shard folder lets an ISN train under DDP with equal batches per rank.
    """
    source, destination = Path(source), Path(destination)
    index = read_index(source)
    destination.mkdir(parents=True, exist_ok=True)
    if any(destination.glob("shard-*.tar")):
        raise FileExistsError(f"{destination} already holds shards")
    per_shard = max(s["count"] for s in index["shards"]) if index["shards"] else 4096
    shards, archive, in_shard, total, size = [], None, 0, 0, 0
    samples = SampleListWriter(destination)

    def close():
        nonlocal archive, in_shard, size
        if archive is not None:
            archive.close()
            path = destination / f"shard-{len(shards):06d}.tar"
            shards.append({"name": path.name, "count": in_shard})
            size += path.stat().st_size
        archive, in_shard = None, 0

    for shard in index["shards"]:
        for jpeg, meta in iterate_tar_samples(source / shard["name"]):
            if meta["id"] not in keep_ids:
                continue
            if archive is None:
                archive = tarfile.open(destination / f"shard-{len(shards):06d}.tar", "w")
            key = f"{total:09d}"
            members = [(f"{key}.jpg", jpeg), (f"{key}.json", None)]
            if SEGMENTATION_KEY in meta:  # the segmentation map goes first, as ShardWriter stores it
                members.insert(0, (f"{key}.seg.png", meta.pop(SEGMENTATION_KEY)))
            for name, data in members:
                data = json.dumps(meta).encode() if data is None else data
                info = tarfile.TarInfo(name)
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
            samples.add(meta["id"], meta.get("author"), meta["lat"], meta["lon"])
            total += 1
            in_shard += 1
            if in_shard >= per_shard:
                close()
    close()
    samples.close()
    subset = dict(index, samples=total, shards=shards, bytes=size, subset_of=str(source))
    (destination / INDEX_FILE).write_text(json.dumps(subset, indent=1))
    return total

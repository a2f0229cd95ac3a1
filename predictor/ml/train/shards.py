"""Training shards: photos resized to a 320 px short side, stored as JPEG in WebDataset-style tar files, and
streamed back by an IterableDataset that splits shards across DataLoader workers and DDP ranks.

Layout of a shard folder: `shard-000000.tar`, ..., `index.json` and `samples.csv.gz` (id, author, lat, lon of every
sample, for overlap checks). Each sample in a tar is two members with the same key: `<key>.jpg` (the resized JPEG)
and `<key>.json` ({"id", "lat", "lon", "labels": [class per partitioning], "author" when known}). Labels are
computed with `Partitioning.class_of` when the shards are written; a dataset opened with different partitionings
recomputes them from lat/lon while loading.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import random
import tarfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import IterableDataset, get_worker_info

from predictor.ml.partitions import Partitioning
from predictor.ml.preprocess import IMAGENET_MEAN, IMAGENET_STD
from predictor.ml.train.holdout import SAMPLES_FILE, SampleListWriter, ValidationSplit

SHARD_FORMAT = "geoweb-shards/1"
INDEX_FILE = "index.json"
SHORT_SIDE = 320
JPEG_QUALITY = 90
SAMPLES_PER_SHARD = 4096
SEGMENTATION_KEY = "_segmentation_png"  # metadata key under which readers hand over a sample's segmentation PNG


def partitionings_fingerprint(partitionings: Sequence[Partitioning]) -> str:
    """Identifies a list of partitionings by their cell tokens, so stored labels are reused only when valid."""
    digest = hashlib.sha256()
    for partitioning in partitionings:
        digest.update(b"|".join(t.encode() for t in partitioning.tokens))
        digest.update(b"#")
    return digest.hexdigest()[:16]


def labels_for(partitionings: Sequence[Partitioning], lat: float, lon: float) -> list[int] | None:
    """Class per partitioning (S2 levels 2..30 walked by class_of), or None if any partitioning has no cell."""
    labels = []
    for partitioning in partitionings:
        label = partitioning.class_of(lat, lon)
        if label is None:
            return None
        labels.append(label)
    return labels


def resize_short_side(image: Image.Image, short_side: int = SHORT_SIDE) -> Image.Image:
    """Shrink so the shorter side is `short_side`; smaller images are kept as they are (never upscaled)."""
    width, height = image.size
    shortest = min(width, height)
    if shortest <= short_side:
        return image
    scale = short_side / shortest
    size = (max(1, int(width * scale + 0.5)), max(1, int(height * scale + 0.5)))
    return image.resize(size, Image.BILINEAR)


def encode_jpeg(image: Image.Image, quality: int = JPEG_QUALITY) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


@dataclass
class ShardWriteReport:
    written: int = 0
    no_cell: int = 0  # dropped: outside every cell of at least one partitioning
    too_small: int = 0  # dropped: shorter side below the minimum
    shards: list[dict] = field(default_factory=list)
    bytes_written: int = 0
    with_author: int = 0

    @property
    def bytes_per_image(self) -> float | None:
        return self.bytes_written / self.written if self.written else None

    def summary(self, split: str) -> str:
        size = f"{self.bytes_per_image:.0f} bytes/image" if self.written else "nothing written"
        return (f"{split}: {self.written} images in {len(self.shards)} shards, {size}; dropped {self.no_cell} "
                f"outside every cell, {self.too_small} too small")


class ShardWriter:
    """Writes samples into numbered tar shards and, on close, the index.json describing them."""

    def __init__(self, folder: str | Path, *, samples_per_shard: int = SAMPLES_PER_SHARD,
                 partitionings: Sequence[Partitioning] = (), short_side: int = SHORT_SIDE,
                 quality: int = JPEG_QUALITY, min_side: int = 16, segmenter=None):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        if any(self.folder.glob("shard-*.tar")):
            raise FileExistsError(f"{self.folder} already holds shards; choose an empty folder")
        self.samples_per_shard = samples_per_shard
        self.partitionings = list(partitionings)
        self.short_side, self.quality, self.min_side = short_side, quality, min_side
        self.report = ShardWriteReport()
        self._tar: tarfile.TarFile | None = None
        self._in_shard = 0
        self._started = time.time()
        self._samples = SampleListWriter(self.folder)
        # image -> colour-coded segmentation image of the same size (predictor.ml.segmentation.PhotoSegmenter),
        # stored as `<key>.seg.png` before the photo, so a reader has it when the sample is complete.
        self.segmenter = segmenter

    def _member(self, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mtime = int(self._started)
        info.mode = 0o644
        self._tar.addfile(info, io.BytesIO(data))

    def _finish_shard(self) -> None:
        if self._tar is None:
            return
        self._tar.close()
        path = self.folder / f"shard-{len(self.report.shards):06d}.tar"
        self.report.shards.append({"name": path.name, "count": self._in_shard})
        self.report.bytes_written += path.stat().st_size
        self._tar, self._in_shard = None, 0

    def add(self, image: Image.Image, lat: float, lon: float, image_id: str, author: str | None = None) -> bool:
        """Resize, label and store one photo; returns False when it is dropped (and counted)."""
        labels: list[int] = []
        if self.partitionings:
            found = labels_for(self.partitionings, lat, lon)
            if found is None:
                self.report.no_cell += 1
                return False
            labels = found
        if min(image.size) < self.min_side:
            self.report.too_small += 1
            return False
        resized = resize_short_side(image, self.short_side)
        jpeg = encode_jpeg(resized, self.quality)
        if self._tar is None:
            path = self.folder / f"shard-{len(self.report.shards):06d}.tar"
            self._tar = tarfile.open(path, "w")
        # Keys are running numbers: ids may contain dots and slashes, which WebDataset keys must not.
        key = f"{self.report.written:09d}"
        meta = {"id": image_id, "lat": lat, "lon": lon, "labels": labels}
        if author:
            meta["author"] = author
            self.report.with_author += 1
        if self.segmenter is not None:
            buffer = io.BytesIO()
            self.segmenter(resized.convert("RGB")).save(buffer, format="PNG")
            self._member(f"{key}.seg.png", buffer.getvalue())
        self._member(f"{key}.jpg", jpeg)
        self._member(f"{key}.json", json.dumps(meta).encode())
        self._samples.add(image_id, author, lat, lon)
        self.report.written += 1
        self._in_shard += 1
        if self._in_shard >= self.samples_per_shard:
            self._finish_shard()
        return True

    def close(self, *, source_report: dict | None = None, split: dict | None = None) -> ShardWriteReport:
        self._finish_shard()
        self._samples.close()
        index = {
            "format": SHARD_FORMAT,
            "short_side": self.short_side,
            "jpeg_quality": self.quality,
            "samples": self.report.written,
            "shards": self.report.shards,
            "bytes": self.report.bytes_written,
            "partitionings": [p.name for p in self.partitionings],
            "partitionings_fingerprint": partitionings_fingerprint(self.partitionings) if self.partitionings else None,
            "dropped": {"no_cell": self.report.no_cell, "too_small": self.report.too_small},
            "source_report": source_report or {},
            "samples_list": SAMPLES_FILE,
            "with_author": self.report.with_author,
            "split": split or {},
            # The segmentation network whose colour-coded maps the samples carry (None: photos only).
            "segmentation": self.segmenter.describe() if self.segmenter is not None else None,
        }
        (self.folder / INDEX_FILE).write_text(json.dumps(index, indent=1))
        return self.report


def write_shards(photos: Iterable, folder: str | Path, *, partitionings: Sequence[Partitioning] = (),
                 samples_per_shard: int = SAMPLES_PER_SHARD, short_side: int = SHORT_SIDE,
                 quality: int = JPEG_QUALITY, source_report=None, progress: bool = False) -> ShardWriteReport:
    """Preprocess an iterable of (image, lat, lon, id) into a shard folder."""
    writer = ShardWriter(folder, samples_per_shard=samples_per_shard, partitionings=partitionings,
                         short_side=short_side, quality=quality)
    if progress:
        from tqdm import tqdm
        photos = tqdm(photos, desc="preprocess", unit="img")
    for photo in photos:
        image, lat, lon, image_id = photo
        writer.add(image, lat, lon, image_id, _author_of(photo))
    report_dict = source_report.as_dict() if source_report is not None else None
    return writer.close(source_report=report_dict)


def _author_of(photo) -> str | None:
    """The author a source found for a photo (GeoPhoto.extra), None for plain (image, lat, lon, id) tuples."""
    return (getattr(photo, "extra", None) or {}).get("author")


def read_index(folder: str | Path) -> dict:
    path = Path(folder) / INDEX_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{folder} has no {INDEX_FILE}: not a shard folder (run preprocess_images)")
    index = json.loads(path.read_text())
    if index.get("format") != SHARD_FORMAT:
        raise ValueError(f"{path}: unknown shard format {index.get('format')!r}")
    return index


def iterate_tar_samples(path: str | Path) -> Iterator[tuple[bytes, dict]]:
    """(jpeg bytes, metadata) for each complete sample of one tar shard, in stored order."""
    pending: dict[str, dict] = {}
    with tarfile.open(path, "r") as archive:
        for member in archive:
            if not member.isfile():
                continue
            key, _, extension = member.name.partition(".")
            entry = pending.setdefault(key, {})
            entry[extension] = archive.extractfile(member).read()
            if "jpg" in entry and "json" in entry:
                del pending[key]
                meta = json.loads(entry["json"])
                if "seg.png" in entry:
                    meta[SEGMENTATION_KEY] = entry["seg.png"]
                yield entry["jpg"], meta


def distributed_position() -> tuple[int, int]:
    """(rank, world size) of this process under torch.distributed, (0, 1) otherwise."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def worker_position() -> tuple[int, int]:
    info = get_worker_info()
    return (info.id, info.num_workers) if info is not None else (0, 1)


def iterate_tar_metadata(path: str | Path) -> Iterator[tuple[dict, tuple[int, int, int, int, int, int]]]:
    """(metadata, (jpeg offset, jpeg size, json offset, json size, segmentation offset, segmentation size; -1, 0
    without one)) for each complete sample of one tar shard,
    reading only the small JSON members; the offsets let `read_tar_samples` fetch a sample without walking the
    tar again."""
    pending: dict[str, dict] = {}
    with tarfile.open(path, "r") as archive:
        for member in archive:
            if not member.isfile():
                continue
            key, _, extension = member.name.partition(".")
            entry = pending.setdefault(key, {})
            entry[extension] = (member.offset_data, member.size)
            if extension == "json":
                entry["meta"] = json.loads(archive.extractfile(member).read())
            if "jpg" in entry and "meta" in entry:
                del pending[key]
                yield entry["meta"], (*entry["jpg"], *entry["json"], *entry.get("seg.png", (-1, 0)))


def read_tar_samples(path: str | Path, locations: np.ndarray) -> Iterator[tuple[bytes, dict]]:
    """(jpeg bytes, metadata) of the samples at `locations` (rows as given by `iterate_tar_metadata`), read
    directly at their offsets, in file order."""
    with open(path, "rb") as handle:
        for jpg_offset, jpg_size, json_offset, json_size, seg_offset, seg_size in sorted(locations.tolist()):
            handle.seek(jpg_offset)
            jpeg = handle.read(jpg_size)
            handle.seek(json_offset)
            meta = json.loads(handle.read(json_size))
            if seg_size > 0:
                handle.seek(seg_offset)
                meta[SEGMENTATION_KEY] = handle.read(seg_size)
            yield jpeg, meta


class ShardStream(IterableDataset):
    """Streams (tensor or JPEG bytes, labels, lat, lon, id) from a shard folder.

    Every (rank, DataLoader worker) pair is one reader, and under DDP every rank yields exactly
    `samples_per_rank()` samples, so all ranks run the same number of steps and none waits for a missing batch.

    - Unfiltered (every stored sample is usable): readers take whole shards round-robin over a per-epoch shuffled
      order (each rank gets total // world samples; readers cycle their shards to fill that quota). When there
      are fewer shards than readers, every reader reads all shards and keeps every n-th sample.
    - Filtered (`keep_ids`, e.g. one scene concept for an ISN; `select`, e.g. one side of a validation split made
      while training; or labels recomputed for other partitionings,
      which may put a photo outside every cell): the usable samples are found first (a scan of the JSON
      metadata, once per stream) and then dealt out, in the epoch's shard order, one by one to the readers.
      Filtering before splitting matters: a subset is rarely spread evenly over the shards, so filtering each
      rank's share afterwards gives ranks different batch counts and DDP stalls at the end of the epoch. Each
      rank gets ceil(usable / world) samples; the few missing on some readers are repeats (padding), as
      DistributedSampler does.
    """

    def __init__(self, folder: str | Path, *, partitionings: Sequence[Partitioning], transform=None,
                 shuffle: bool = True, shuffle_buffer: int = 1000, seed: int = 0, keep_ids: set[str] | None = None,
                 select=None, encoded: bool = False, rank: int | None = None, world_size: int | None = None,
                 segmentation: bool = False, scene_targets: dict[str, int] | None = None):
        super().__init__()
        self.folder = Path(folder)
        self.index = read_index(self.folder)
        self.partitionings = list(partitionings)
        stored = self.index.get("partitionings_fingerprint")
        self.stored_labels_valid = bool(self.partitionings) and stored == partitionings_fingerprint(self.partitionings)
        self.transform = transform
        self.shuffle, self.shuffle_buffer, self.seed = shuffle, shuffle_buffer, seed
        self.keep_ids = keep_ids
        self.select = select  # a picklable predicate on a sample's metadata, e.g. one side of a validation split
        self.encoded = encoded  # yield raw JPEG bytes for decoding on the GPU
        self.rank, self.world_size = rank, world_size
        # segmentation: `transform(photo, segmentation image)` makes one [3 + c, s, s] tensor of each sample;
        # scene_targets: id -> scene class, appended to the labels (-100, ignored by the loss, when unknown).
        self.segmentation = segmentation
        if segmentation and not self.index.get("segmentation"):
            raise ValueError(f"{self.folder} holds no segmentation maps: write the shards with preprocess_images "
                             "--segmentation")
        self.scene_targets = scene_targets
        self.epoch = 0
        self._label_cache: dict[tuple[float, float], list[int] | None] = {}
        self._usable: dict[str, np.ndarray] | None = None  # filtered streams: usable sample locations per shard

    @property
    def filtered(self) -> bool:
        return self.keep_ids is not None or self.select is not None or not self.stored_labels_valid

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _position(self) -> tuple[int, int]:
        rank, world = distributed_position()
        if self.rank is not None:
            rank, world = self.rank, self.world_size or 1
        return rank, world

    def _keep(self, meta: dict) -> list[int] | None:
        """The sample's labels, or None when the stream skips it (outside the subset, or in no cell)."""
        if self.keep_ids is not None and meta["id"] not in self.keep_ids:
            return None
        if self.select is not None and not self.select(meta):
            return None
        return self._labels(meta)

    def usable_locations(self) -> dict[str, np.ndarray]:
        """Filtered streams: for each shard, where the samples the stream yields are ([n, 4] offsets and sizes
        of their JPEG and JSON members). Scanned once, from the JSON members only."""
        if self._usable is None:
            usable = {}
            for shard in self.index["shards"]:
                if shard["count"] > 0:
                    rows = [location for meta, location in iterate_tar_metadata(self.folder / shard["name"])
                            if self._keep(meta) is not None]
                    usable[shard["name"]] = np.asarray(rows, dtype=np.int64).reshape(-1, 6)
            self._usable = usable
        return self._usable

    def usable_samples(self) -> int:
        if not self.filtered:
            return int(self.index["samples"])
        return int(sum(len(p) for p in self.usable_locations().values()))

    def samples_per_rank(self) -> int:
        """Samples one rank yields per epoch, the same on every rank under DDP."""
        _, world = self._position()
        usable = self.usable_samples()
        if world <= 1:
            return usable
        return math.ceil(usable / world) if self.filtered else usable // world

    def __len__(self) -> int:
        return self.samples_per_rank()

    def _worker_quota(self, worker: int, workers: int) -> int:
        per_rank = self.samples_per_rank()
        return per_rank // workers + (1 if worker < per_rank % workers else 0)

    def batches_per_rank(self, batch_size: int, workers: int) -> int:
        """Batches a DataLoader with `workers` workers (0 = in process) makes of this rank's share per epoch:
        each worker batches its own samples, so each may end with a short batch."""
        if workers <= 0:
            return math.ceil(self.samples_per_rank() / batch_size)
        return sum(math.ceil(self._worker_quota(w, workers) / batch_size) for w in range(workers))

    def _labels(self, meta: dict) -> list[int] | None:
        if self.stored_labels_valid:
            return meta["labels"]
        key = (meta["lat"], meta["lon"])
        if key not in self._label_cache:
            self._label_cache[key] = labels_for(self.partitionings, meta["lat"], meta["lon"])
        return self._label_cache[key]

    def _epoch_shards(self) -> list[str]:
        shards = [s["name"] for s in self.index["shards"] if s["count"] > 0]
        if self.shuffle:
            random.Random(self.seed + self.epoch).shuffle(shards)
        return shards

    def _reader_plan(self) -> tuple[list[str], int, int, int | None]:
        """Unfiltered streams: (shard names, sample stride, sample offset, quota) for this reader."""
        rank, world = self._position()
        worker, workers = worker_position()
        readers, reader = world * workers, rank * workers + worker
        shards = self._epoch_shards()
        quota = self._worker_quota(worker, workers) if world > 1 else None
        if len(shards) >= readers:
            return shards[reader::readers], 1, 0, quota
        return shards, readers, reader, quota

    def _raw_samples(self) -> Iterator[tuple[bytes, dict]]:
        if self.filtered:
            yield from self._filtered_samples()
            return
        shards, stride, offset, quota = self._reader_plan()
        if not shards:
            return
        yielded, position = 0, 0
        while True:
            for name in shards:
                for jpeg, meta in iterate_tar_samples(self.folder / name):
                    position += 1
                    if (position - 1) % stride != offset:
                        continue
                    if quota is not None and yielded >= quota:
                        return
                    yielded += 1
                    yield jpeg, meta
            # Cycle only to fill the DDP quota, and stop if a pass yields nothing (avoids an endless loop).
            if quota is None or yielded >= quota or yielded == 0:
                return

    def _filtered_samples(self) -> Iterator[tuple[bytes, dict]]:
        """This reader's share of the usable samples: every `readers`-th one in the epoch's shard order, wrapping
        around to pad up to its quota."""
        rank, world = self._position()
        worker, workers = worker_position()
        readers, reader = world * workers, rank * workers + worker
        usable = self.usable_locations()
        order = [name for name in self._epoch_shards() if len(usable.get(name, ()))]
        if not order:
            return
        sizes = np.array([len(usable[name]) for name in order])
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        total = int(sizes.sum())
        quota = self._worker_quota(worker, workers) if world > 1 else len(range(reader, total, readers))
        picks = (reader + readers * np.arange(quota, dtype=np.int64)) % total  # global indices, padded by wrapping
        shard_of = np.searchsorted(starts, picks, side="right") - 1
        for shard in np.unique(shard_of).tolist():
            mine = picks[shard_of == shard] - starts[shard]
            yield from read_tar_samples(self.folder / order[shard], usable[order[shard]][mine])

    def _shuffled(self, samples: Iterator) -> Iterator:
        if not self.shuffle or self.shuffle_buffer <= 1:
            yield from samples
            return
        rank, _ = self._position()
        worker, _ = worker_position()
        rng = random.Random((self.seed + self.epoch) * 1_000_003 + rank * 1000 + worker)
        buffer = []
        for sample in samples:
            if len(buffer) < self.shuffle_buffer:
                buffer.append(sample)
                continue
            i = rng.randrange(len(buffer))
            buffer[i], sample = sample, buffer[i]
            yield sample
        rng.shuffle(buffer)
        yield from buffer

    def __iter__(self):
        for jpeg, meta in self._shuffled(self._raw_samples()):
            labels = self._keep(meta)
            if labels is None:  # cannot happen: filtered streams pre-select, unfiltered ones have stored labels
                continue
            if self.scene_targets is not None:
                labels = [*labels, self.scene_targets.get(meta["id"], -100)]
            target = torch.tensor(labels, dtype=torch.long)
            if self.encoded:
                item = torch.frombuffer(bytearray(jpeg), dtype=torch.uint8)
            elif self.segmentation:
                image = Image.open(io.BytesIO(jpeg)).convert("RGB")
                segmentation = Image.open(io.BytesIO(meta[SEGMENTATION_KEY])).convert("RGB")
                item = self.transform(image, segmentation)
            else:
                image = Image.open(io.BytesIO(jpeg)).convert("RGB")
                item = self.transform(image) if self.transform is not None else image
            yield item, target, float(meta["lat"]), float(meta["lon"]), meta["id"]


def collate_samples(batch):
    """Stack images (or keep a list of encoded JPEGs), labels [B, P], coordinates [B], ids list."""
    items, targets, lats, lons, ids = zip(*batch)
    images = list(items) if items[0].dtype == torch.uint8 and items[0].dim() == 1 else torch.stack(items)
    return (images, torch.stack(targets), torch.tensor(lats, dtype=torch.float64),
            torch.tensor(lons, dtype=torch.float64), list(ids))


def train_transform(size: int = 224, scale: tuple[float, float] = (0.66, 1.0)):
    """The paper's PyTorch augmentation: random resized crop (scale 0.66-1) and horizontal flip."""
    from torchvision import transforms
    return transforms.Compose([
        transforms.RandomResizedCrop(size, scale=scale),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


def eval_transform(size: int = 224):
    """Resize the short side to 256/224 of the crop size, then centre crop (the paper's validation transform)."""
    from torchvision import transforms
    return transforms.Compose([
        transforms.Resize(int(math.floor(size * 256 / 224))),
        transforms.CenterCrop(size),
        transforms.ToTensor(),
        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


def decode_batch(encoded: list[torch.Tensor], *, device: str | torch.device, size: int = 224,
                 train: bool = True, scale: tuple[float, float] = (0.66, 1.0)) -> torch.Tensor:
    """Decode JPEG bytes with torchvision.io.decode_jpeg on `device` (nvJPEG on CUDA) and augment there.

    This removes the CPU decode bottleneck on a GPU machine; the augmentation matches `train_transform` /
    `eval_transform`.
    """
    from torchvision.io import ImageReadMode, decode_jpeg
    from torchvision.transforms import v2
    from torchvision.transforms.v2 import functional as F

    images = decode_jpeg(encoded, mode=ImageReadMode.RGB, device=device)
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(3, 1, 1)
    out = []
    for image in images:
        if train:
            top, left, h, w = v2.RandomResizedCrop.get_params(image, scale=list(scale), ratio=[3 / 4, 4 / 3])
            image = F.resized_crop(image, top, left, h, w, [size, size], antialias=True)
            if torch.rand(()) < 0.5:
                image = F.horizontal_flip(image)
        else:
            image = F.center_crop(F.resize(image, [int(size * 256 / 224)], antialias=True), [size, size])
        out.append(image)
    batch = torch.stack(out).float().div_(255)
    return (batch - mean) / std


def bytes_per_image(folder: str | Path) -> float | None:
    index = read_index(folder)
    return index["bytes"] / index["samples"] if index["samples"] else None


@dataclass
class SplitReport:
    """How the photos were split into training and validation, for the command's output and index.json."""

    split: ValidationSplit
    by_kind: dict[str, int] = field(default_factory=dict)  # photos split by image / author / place

    def describe(self) -> str:
        """What the split did: `by="auto"` says whether authors were known."""
        if self.split.by != "auto":
            return self.split.describe()
        kinds = {kind for kind, n in self.by_kind.items() if n}
        if kinds == {"author"}:
            return ValidationSplit("author", self.split.fraction).describe()
        if kinds == {"image"}:
            return f"{100 * self.split.fraction:g} % held out by image id (no photo had a known author)"
        return (f"{100 * self.split.fraction:g} % held out by author ({self.by_kind.get('author', 0)} photos) and by "
                f"image id where no author is known ({self.by_kind.get('image', 0)} photos)")

    def to_dict(self) -> dict:
        return {**self.split.to_dict(), "description": self.describe(), "photos_by_key": dict(self.by_kind)}

    def summary(self) -> str:
        keys = ", ".join(f"{n} by {kind}" for kind, n in sorted(self.by_kind.items()))
        return f"validation split: {self.describe()} ({keys or 'no photos'})"


def preprocess_photos(photos: Iterable, output: str | Path, *, partitionings: Sequence[Partitioning] = (),
                      val_fraction: float = 0.0, split: ValidationSplit | None = None, all_to: str | None = None,
                      samples_per_shard: int = SAMPLES_PER_SHARD, short_side: int = SHORT_SIDE,
                      quality: int = JPEG_QUALITY, source_report=None, progress: bool = False,
                      segmenter=None) -> tuple[dict[str, ShardWriteReport], SplitReport | None]:
    """Write `output/train` and, with a validation fraction, `output/val` from (image, lat, lon, id) items or
    `GeoPhoto`s (whose author the split can use). `all_to="val"` writes every photo to `output/val` (a separate
    validation set such as YFCC25600). `segmenter` (image -> colour-coded segmentation image) adds a segmentation
    map to every sample."""
    output = Path(output)
    split = split or ValidationSplit("image", val_fraction)
    if split.fraction > 0 and all_to:
        raise ValueError("a separate validation set is not split: give either a validation fraction or all_to")
    options = dict(samples_per_shard=samples_per_shard, partitionings=partitionings, short_side=short_side,
                   quality=quality, segmenter=segmenter)
    splits = [all_to] if all_to else ["train", "val"] if split.fraction > 0 else ["train"]
    writers = {name: ShardWriter(output / name, **options) for name in splits}
    report = SplitReport(split) if split.fraction > 0 else None
    if progress:
        from tqdm import tqdm
        photos = tqdm(photos, desc="preprocess", unit="img")
    for photo in photos:
        image, lat, lon, image_id = photo
        author = _author_of(photo)
        name = splits[0]
        if report is not None:
            kind = split.key_kind(author)
            report.by_kind[kind] = report.by_kind.get(kind, 0) + 1
            name = "val" if split.holds_out(image_id, author, lat, lon) else "train"
        writers[name].add(image, lat, lon, image_id, author)
    report_dict = source_report.as_dict() if source_report is not None else None
    split_dict = report.to_dict() if report is not None else None
    return {name: writer.close(source_report=report_dict, split=split_dict)
            for name, writer in writers.items()}, report

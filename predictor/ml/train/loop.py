"""Training base(M) or one ISN network on shards: SGD with the paper's schedule, summed cross-entropy over the
partitionings, bf16 autocast and channels_last on CUDA, per-epoch checkpoints with exact resume, validation with
great-circle accuracy per partitioning and for f*, and DDP when launched by torchrun.

Entry points: `train(TrainConfig(...))`, the `train` management command and `python -m predictor.ml.train`.
`train` sets up and loops over epochs; `train_one_epoch` and `evaluate` are one pass each (the shape of
torchvision's reference classification script).
"""
from __future__ import annotations

import csv
import json
import os
import random
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from predictor.ml.geodesy import ACCURACY_THRESHOLDS_KM, great_circle_km
from predictor.ml.hierarchy import hierarchical_probabilities
from predictor.ml.network import GeoNetwork
from predictor.ml.partitions import HIERARCHY_NAMES, Partitioning, parent_matrix
from predictor.ml.train.holdout import (DEFAULT_PLACE_LEVEL, SplitSide, ValidationSplit, find_overlap,
                                        read_samples)
from predictor.ml.vit_network import ViTGeoNetwork, is_vit, network_from_description
from predictor.ml.train.shards import (ShardStream, collate_samples, decode_batch, eval_transform, read_index,
                                       train_transform)

CHECKPOINT_FORMAT = "geoweb-train-checkpoint/1"
HIERARCHY = "hierarchy"
PAPER_MILESTONES = (4, 8, 12, 13, 14, 15)


@dataclass
class TrainConfig:
    train_shards: str
    val_shards: str | None  # a held-out shard folder; None: hold out val_fraction of train_shards while training
    partitionings: list[str]  # cell CSV files, coarse -> fine
    output_dir: str
    backbone: str = "resnet50"
    pretrained: str | None = None  # a torchvision ImageNet state dict on disk (ResNets); never downloaded
    epochs: int = 15
    batch_size: int = 128
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    milestones: tuple[int, ...] = PAPER_MILESTONES
    gamma: float = 0.5
    crop_size: int = 224
    crop_scale: tuple[float, float] = (0.66, 1.0)
    workers: int = 4
    device: str = "auto"
    precision: str = "auto"  # bf16 | fp16 | fp32; auto = bf16 on CUDA, fp32 on CPU
    channels_last: bool | None = None  # None = on for CUDA
    compile: bool = False
    gpu_decode: bool = False  # decode JPEGs with nvJPEG (torchvision.io.decode_jpeg on CUDA)
    concept: str | None = None  # train an ISN on one scene concept: indoor | natural | urban
    scene_labels: str | None = None  # CSV written by label_scenes (needed with concept)
    scene_min_probability: float = 0.0
    seed: int = 0
    shuffle_buffer: int = 2000
    resume: str | None = None  # a checkpoint path, or "auto" for output_dir/last.pt if it exists
    max_steps_per_epoch: int | None = None  # for smoke runs and benchmarks
    progress: bool = True
    name: str = "base-M"
    val_fraction: float = 0.0  # without val_shards: the share of train_shards held out for validation
    val_split_by: str = "auto"  # image | author | place | auto (author where known, else image)
    val_place_level: int = DEFAULT_PLACE_LEVEL
    allow_overlap: bool = False  # train even when validation images are also training images
    # Search within Cell: a retrieval head trained beside the classification heads (predictor.ml.retrieval). 0: none.
    contrastive_weight: float = 0.0
    positive_km: float = 25.0  # photos this close are positives of each other; 0: photos of the same fine cell
    embedding_dim: int = 256
    # The multi-task ViT (backbone vit_*): scene head classes (3 / 16 / 365), the scene loss weight (lambda), one
    # scene's subset (indoor | natural | urban | all), and the shards' segmentation maps as a second input.
    scene_classes: int = 3
    scene_weight: float = 1.0
    scene_of_interest: str | None = None
    segmentation: bool = False

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        config = cls(**{k: v for k, v in values.items() if k in known})
        config.milestones = tuple(int(m) for m in config.milestones)
        config.crop_scale = tuple(float(s) for s in config.crop_scale)
        return config


# --- set-up -----------------------------------------------------------------------------------------------------

@dataclass
class Runtime:
    device: torch.device
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def start_runtime(device: str) -> Runtime:
    """Join the torchrun process group when WORLD_SIZE > 1 (NCCL on CUDA, gloo on CPU)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if world_size <= 1:
        return Runtime(torch.device(device))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.startswith("cuda"):
        torch.cuda.set_device(local_rank)
        resolved = torch.device("cuda", local_rank)
        backend = "nccl"
    else:
        resolved, backend = torch.device("cpu"), "gloo"
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend=backend)
    return Runtime(resolved, torch.distributed.get_rank(), torch.distributed.get_world_size(), local_rank)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    # Stored as plain lists/tensors so the checkpoint loads with torch.load(weights_only=True).
    state = {"python": random.getstate(), "numpy": _numpy_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _numpy_state() -> dict:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached": float(cached)}


def restore_rng(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def read_keep_ids(scene_labels: str, concept: str, min_probability: float) -> set[str]:
    from predictor.ml.train.scene_labels import subset_ids
    return subset_ids(scene_labels, concept=concept, min_probability=min_probability)


def load_partitionings(paths: list[str]) -> list[Partitioning]:
    names = list(HIERARCHY_NAMES) if len(paths) == len(HIERARCHY_NAMES) else [Path(p).stem for p in paths]
    return [Partitioning.from_csv(p, name=n) for p, n in zip(paths, names)]


# --- metrics ----------------------------------------------------------------------------------------------------

class GeoAccuracy:
    """Accumulates loss, top-1 and great-circle accuracy per partitioning and for f* over a validation pass."""

    def __init__(self, partitionings: list[Partitioning], parents: torch.Tensor):
        self.partitionings = partitionings
        self.parents = parents
        self.names = [p.name for p in partitionings]
        self.cell_lat = [torch.as_tensor(p.lat) for p in partitionings]
        self.cell_lon = [torch.as_tensor(p.lon) for p in partitionings]
        self.loss_sums = np.zeros(len(partitionings))
        self.correct = np.zeros(len(partitionings))
        self.distances: dict[str, list[np.ndarray]] = {n: [] for n in [*self.names, HIERARCHY]}
        self.count = 0
        self.fine_predictions: list[np.ndarray] = []  # the f* cell of every image, to see a collapse

    def add(self, logits: list[torch.Tensor], targets: torch.Tensor, lats: torch.Tensor, lons: torch.Tensor):
        logits = [t.float().cpu() for t in logits]
        targets = targets.cpu()
        n = targets.shape[0]
        self.count += n
        probabilities = []
        for p, head in enumerate(logits):
            self.loss_sums[p] += F.cross_entropy(head, targets[:, p], reduction="sum").item()
            predicted = head.argmax(dim=1)
            self.correct[p] += (predicted == targets[:, p]).sum().item()
            self._distances(self.names[p], self.cell_lat[p][predicted], self.cell_lon[p][predicted], lats, lons)
            probabilities.append(torch.softmax(head, dim=1))
        fine = hierarchical_probabilities(probabilities, self.parents).argmax(dim=1)
        self._distances(HIERARCHY, self.cell_lat[-1][fine], self.cell_lon[-1][fine], lats, lons)
        self.fine_predictions.append(fine.numpy())

    def _distances(self, name, plat, plon, lats, lons):
        self.distances[name].append(np.asarray(great_circle_km(plat.numpy(), plon.numpy(), lats.numpy(),
                                                               lons.numpy()), dtype=float).reshape(-1))

    def result(self, prefix: str = "val") -> dict[str, float]:
        out: dict[str, float] = {}
        n = max(self.count, 1)
        out[f"{prefix}_loss"] = float(self.loss_sums.sum() / n)
        for p, name in enumerate(self.names):
            out[f"{prefix}_loss_{name}"] = float(self.loss_sums[p] / n)
            out[f"{prefix}_top1_{name}"] = float(self.correct[p] / n)
        for name, parts in self.distances.items():
            distances = np.concatenate(parts) if parts else np.zeros(0)
            for threshold in ACCURACY_THRESHOLDS_KM:
                value = float(np.mean(distances <= threshold)) if distances.size else float("nan")
                out[f"{prefix}_acc{int(threshold)}km_{name}"] = value
            out[f"{prefix}_median_km_{name}"] = float(np.median(distances)) if distances.size else float("nan")
        out[f"{prefix}_images"] = self.count
        fine = np.concatenate(self.fine_predictions) if self.fine_predictions else np.zeros(0, dtype=np.int64)
        counts = np.bincount(fine) if fine.size else np.zeros(1)
        out[f"{prefix}_distinct_cells_{HIERARCHY}"] = int(np.count_nonzero(counts))
        out[f"{prefix}_top_cell_share_{HIERARCHY}"] = float(counts.max() / fine.size) if fine.size else float("nan")
        return out


# --- the loop ---------------------------------------------------------------------------------------------------

def _autocast(runtime: Runtime, precision: str):
    if precision == "fp32":
        return nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=runtime.device.type, dtype=dtype)


def _resolve_precision(config: TrainConfig, runtime: Runtime) -> str:
    if config.precision != "auto":
        return config.precision
    return "bf16" if runtime.device.type == "cuda" else "fp32"


def _loader(dataset: ShardStream, config: TrainConfig, runtime: Runtime, batch_size: int) -> DataLoader:
    workers = config.workers
    return DataLoader(dataset, batch_size=batch_size, num_workers=workers, collate_fn=collate_samples,
                      pin_memory=runtime.device.type == "cuda", drop_last=False,
                      prefetch_factor=4 if workers > 0 else None, persistent_workers=False)


def _to_device_images(images, runtime: Runtime, config: TrainConfig, *, train: bool, channels_last: bool):
    if isinstance(images, list):  # encoded JPEGs: decode (nvJPEG on CUDA) and augment on the device
        images = decode_batch(images, device=runtime.device, size=config.crop_size, train=train,
                              scale=config.crop_scale)
    else:
        images = images.to(runtime.device, non_blocking=True)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images


def save_checkpoint(path: Path, *, model: nn.Module, optimizer, scheduler, scaler, epoch: int, config: TrainConfig,
                    partitionings: list[Partitioning], history: list[dict], best: float | None,
                    validation: dict | None = None) -> None:
    state = {
        "format": CHECKPOINT_FORMAT,
        "epoch": epoch,  # epochs completed
        "model": model.state_dict(),
        "backbone": config.backbone,
        "num_classes": [len(p) for p in partitionings],
        # The ViT's full description (scene classes, segmentation channels, image size); "" for other networks.
        "network": json.dumps(model.describe()) if isinstance(model, ViTGeoNetwork) else "",
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else {},
        "rng": rng_state(),
        "config": json.dumps(asdict(config)),
        "partitionings": [{"name": p.name, "text": p.to_text()} for p in partitionings],
        "history": json.dumps(history),
        "best_val_loss": best,
        "validation": json.dumps(validation),  # how the validation set was kept apart, and its overlap figures
    }
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)  # never leave a half-written checkpoint behind


def load_checkpoint(path: str | Path) -> dict:
    """A training checkpoint, loaded without unpickling arbitrary objects."""
    state = torch.load(Path(path), map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a GeoWeb training checkpoint")
    state["config"] = json.loads(state["config"])
    state["history"] = json.loads(state["history"])
    state["validation"] = json.loads(state.get("validation") or "null")
    state["partitionings"] = [Partitioning.from_text(p["text"], name=p["name"]) for p in state["partitionings"]]
    return state


def network_from_checkpoint(state: dict) -> GeoNetwork | ViTGeoNetwork:
    """The trained network: the ViT its checkpoint describes, or a GeoNetwork (a `SwCNetwork`, GeoNetwork + retrieval
    head, when it was trained with one)."""
    if state.get("network"):
        network = network_from_description(json.loads(state["network"]))
        network.load_state_dict(state["model"])
        return network.eval()
    network = build_network(state["backbone"], state["num_classes"], embedding_dim=_embedding_dim(state["model"]))
    network.load_state_dict(state["model"])
    return network.eval()


def _embedding_dim(model_state: dict) -> int | None:
    weight = model_state.get("retrieval.project.weight")
    return int(weight.shape[0]) if weight is not None else None


def build_network(backbone: str, num_classes: list[int], *, pretrained: str | None = None,
                  embedding_dim: int | None = None) -> nn.Module:
    """GeoNetwork, or with `embedding_dim` a SwCNetwork: its heads' logits first, then the embedding."""
    network = GeoNetwork(backbone, num_classes, pretrained_path=pretrained)
    if embedding_dim:
        from predictor.ml.swc import SwCNetwork
        network = SwCNetwork(network, dim=embedding_dim)
    return network


def _retrieval_loss(outputs: list[torch.Tensor], targets: torch.Tensor, lats, lons, config: TrainConfig):
    """(classification logits, the contrastive loss or None) of one forward pass."""
    heads = targets.shape[1]
    if len(outputs) == heads:
        return outputs, None
    from predictor.ml.retrieval import contrastive_loss
    if config.positive_km > 0:
        loss = contrastive_loss(outputs[heads], lats, lons, positive_km=config.positive_km)
    else:
        loss = contrastive_loss(outputs[heads], lats, lons, positive_km=0.0, cells=targets[:, -1])
    return outputs[:heads], loss


def _write_metrics(path: Path, row: dict) -> None:
    exists = path.is_file()
    fieldnames = list(row)
    if exists:
        with open(path, newline="") as handle:
            header = next(csv.reader(handle), [])
        if header:
            fieldnames = header + [k for k in row if k not in header]
            if fieldnames != header:  # a new column appeared: rewrite the file with the wider header
                with open(path, newline="") as handle:
                    old = list(csv.DictReader(handle))
                with open(path, "w", newline="") as handle:
                    writer = csv.DictWriter(handle, fieldnames=fieldnames)
                    writer.writeheader()
                    writer.writerows(old)
    with open(path, "a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fieldnames)
        if not exists:
            writer.writeheader()
        writer.writerow(row)


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, *, partitionings: list[Partitioning], parents: torch.Tensor,
             runtime: Runtime, config: TrainConfig, precision: str, channels_last: bool,
             progress: bool = False) -> dict[str, float]:
    model.eval()
    accuracy = GeoAccuracy(partitionings, parents)
    scene_seen = scene_correct = 0
    batches = loader
    if progress:
        from tqdm import tqdm
        batches = tqdm(loader, desc="validate", unit="batch", leave=False)
    for images, targets, lats, lons, _ in batches:
        images = _to_device_images(images, runtime, config, train=False, channels_last=channels_last)
        with _autocast(runtime, precision):
            logits = model(images)
        heads = len(partitionings)
        accuracy.add(logits[:heads], targets[:, :heads], lats, lons)  # a retrieval head's embedding comes after
        if targets.shape[1] > heads and len(logits) > heads:  # the ViT's scene head, on the images with a label
            known = targets[:, heads] >= 0
            scene_seen += int(known.sum())
            scene_correct += int((logits[heads].float().cpu().argmax(dim=1)[known] == targets[known, heads]).sum())
    result = accuracy.result("val")
    if scene_seen:
        result["val_top1_scene"] = scene_correct / scene_seen
    return result


def epoch_steps(train_set: ShardStream, config: TrainConfig, runtime: Runtime) -> int:
    """Optimizer steps of this epoch, equal on every rank.

    Under DDP the stream gives every rank the same number of samples (so the same number of batches); taking the
    minimum over the ranks as well (one all_reduce of a single number per epoch) keeps a rank from ever entering
    a step the others will not take, where DistributedDataParallel would wait for it forever.
    """
    steps = train_set.batches_per_rank(config.batch_size, config.workers)
    if config.max_steps_per_epoch:
        steps = min(steps, config.max_steps_per_epoch)
    if runtime.distributed:
        count = torch.tensor([steps], dtype=torch.int64,
                             device=runtime.device if torch.distributed.get_backend() == "nccl" else "cpu")
        torch.distributed.all_reduce(count, op=torch.distributed.ReduceOp.MIN)
        steps = int(count.item())
    return steps


@dataclass
class EpochResult:
    """What one pass over the training set measured, summed over every rank."""

    lr: float
    images: int
    seconds: float
    loss_sums: torch.Tensor  # [1 + partitionings (+ 1)]: the summed loss, each head's, weighted by batch size
    steps: int
    extra_loss: str = ""  # what a last entry of loss_sums is: "scene" (a ViT's scene head) or "contrastive"

    def row(self, epoch: int, partitionings: list[Partitioning]) -> dict:
        seen = max(float(self.images), 1.0)
        row = {"epoch": epoch, "lr": self.lr, "train_images": self.images,
               "images_per_s": round(self.images / max(self.seconds, 1e-9), 2), "seconds": round(self.seconds, 2),
               "train_loss": float(self.loss_sums[0] / seen)}
        for p, part in enumerate(partitionings):
            row[f"train_loss_{part.name}"] = float(self.loss_sums[p + 1] / seen)
        if len(self.loss_sums) > len(partitionings) + 1 and self.extra_loss:
            # the ViT's scene cross-entropy (before lambda), or the retrieval head's contrastive loss
            row[f"train_loss_{self.extra_loss}"] = float(self.loss_sums[-1] / seen)
        return row


def scene_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the scene head over the images with a scene label (-100: none); 0 when none has one."""
    known = targets >= 0
    if not bool(known.any()):
        return logits.float().sum() * 0.0
    return F.cross_entropy(logits.float()[known], targets[known])


def train_one_epoch(model: nn.Module, loader: DataLoader, *, optimizer, scaler, runtime: Runtime,
                    config: TrainConfig, precision: str, channels_last: bool, epoch: int, total_steps: int,
                    num_heads: int) -> EpochResult:
    """One epoch of SGD over `loader` (summed cross-entropy of every head); losses and image counts are summed
    over the ranks under DDP. `num_heads` counts the partitionings, plus one for a ViT's scene head."""
    num_partitions = num_heads - 1 if is_vit(config.backbone) else num_heads
    model.train()
    lr = optimizer.param_groups[0]["lr"]
    retrieval = config.contrastive_weight > 0
    loss_sums = torch.zeros(num_heads + 1 + int(retrieval), dtype=torch.float64)
    seen = 0
    started = time.perf_counter()
    # One process reads to the end of its stream (its workers' shards may hold a batch more than the count
    # says); under DDP or with --max-steps-per-epoch the count is a hard limit.
    limit = total_steps if runtime.distributed or config.max_steps_per_epoch else None
    batches = loader
    if config.progress and runtime.is_main:
        from tqdm import tqdm
        batches = tqdm(loader, total=total_steps, desc=f"epoch {epoch + 1}/{config.epochs}", unit="batch")
    steps = 0
    for step, (images, targets, lats, lons, _) in enumerate(batches):
        if limit is not None and step >= limit:
            break
        images = _to_device_images(images, runtime, config, train=True, channels_last=channels_last)
        targets = targets.to(runtime.device, non_blocking=True)
        with _autocast(runtime, precision):
            logits, contrastive = _retrieval_loss(model(images), targets, lats, lons, config)
            losses = [F.cross_entropy(head.float(), targets[:, p]) for p, head in enumerate(logits[:num_partitions])]
            loss = torch.stack(losses).sum()
            if len(logits) > num_partitions:  # loss = sum of the partitionings' CEs + lambda x scene CE
                losses.append(scene_loss(logits[num_partitions], targets[:, num_partitions]))
                loss = loss + config.scene_weight * losses[-1]
            if contrastive is not None:
                loss = loss + config.contrastive_weight * contrastive
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        n = targets.shape[0]
        seen += n
        loss_sums[0] += loss.detach().double().cpu() * n
        for p, head_loss in enumerate(losses):
            loss_sums[p + 1] += head_loss.detach().double().cpu() * n
        if contrastive is not None:
            loss_sums[-1] += contrastive.detach().double().cpu() * n
        steps += 1
        if hasattr(batches, "set_postfix"):
            # Every step: loss_sums above has brought the loss to the host already, so this adds no device sync.
            batches.set_postfix(loss=f"{loss.item():.3f}", lr=f"{lr:.2e}")
    elapsed = time.perf_counter() - started
    counts = torch.tensor([float(seen)], dtype=torch.float64)
    if runtime.distributed:
        torch.distributed.all_reduce(loss_sums)
        torch.distributed.all_reduce(counts)
    return EpochResult(lr=lr, images=int(counts.item()), seconds=elapsed, loss_sums=loss_sums, steps=steps,
                       extra_loss="scene" if is_vit(config.backbone) else "contrastive" if retrieval else "")


def _resume_path(config: TrainConfig, output: Path) -> Path | None:
    if config.resume == "auto":
        return output / "last.pt" if (output / "last.pt").is_file() else None
    return Path(config.resume) if config.resume else None


def _say(runtime: Runtime, message: str) -> None:
    if runtime.is_main:
        print(message, flush=True)


def _validation_split(config: TrainConfig) -> ValidationSplit | None:
    """The split made while training (no --val-shards), or None when a held-out folder is given."""
    if config.val_shards and config.val_fraction:
        raise ValueError("give either --val-shards (a held-out folder) or --val-fraction (hold out part of the "
                         "training shards now), not both")
    if config.val_shards:
        return None
    if not config.val_fraction:
        raise ValueError("training needs a validation set: give --val-shards, or --val-fraction to hold out part "
                         "of the training shards")
    return ValidationSplit(config.val_split_by, config.val_fraction, config.val_place_level)


def _vit_data(config: TrainConfig) -> tuple[dict[str, int] | None, set[str] | None]:
    """The ViT's scene targets and, with --scene-of-interest, the ids of that scene's images."""
    from predictor.ml.train.vit_data import concept_ids, read_scene_targets
    if config.concept:
        raise ValueError("--concept trains one ISN network; a ViT trains on one scene with --scene-of-interest")
    if not config.scene_labels:
        if config.scene_weight:
            raise ValueError("a ViT's scene head needs --scene-labels (a label_scenes CSV, or a metadata CSV with "
                             "S3_Label / S16_Label / S365_Label columns), or --scene-weight 0 to leave it untrained")
        if config.scene_of_interest not in (None, "all"):
            raise ValueError("--scene-of-interest needs --scene-labels")
        return None, None
    targets = read_scene_targets(config.scene_labels, classes=config.scene_classes)
    if config.scene_of_interest in (None, "all"):
        return targets, None
    keep = concept_ids(targets, classes=config.scene_classes, concept=config.scene_of_interest)
    if not keep:
        raise ValueError(f"no image of {config.scene_labels} has the scene {config.scene_of_interest!r}")
    return targets, keep


def _transforms(config: TrainConfig):
    if config.segmentation:
        from predictor.ml.train.vit_data import PairTransform
        return (PairTransform(config.crop_size, train=True, scale=config.crop_scale),
                PairTransform(config.crop_size, train=False))
    if config.gpu_decode:
        return None, None
    return train_transform(config.crop_size, config.crop_scale), eval_transform(config.crop_size)


def _datasets(config: TrainConfig, partitionings: list[Partitioning], split: ValidationSplit | None):
    """(training stream, validation stream, ids of the concept's images or None) as the config asks."""
    keep_ids, scene_targets = None, None
    vit = is_vit(config.backbone)
    if not vit and (config.segmentation or config.scene_of_interest):
        raise ValueError("--segmentation and --scene-of-interest are options of the ViT backbones (vit_*)")
    if vit and config.contrastive_weight > 0:
        raise ValueError("--contrastive-weight (a Search-within-Cell retrieval head) is for the CNN backbones, "
                         "not the ViT ones")
    if config.segmentation and config.gpu_decode:
        raise ValueError("--gpu-decode decodes photos only; train with segmentation maps without it")
    if vit:
        scene_targets, keep_ids = _vit_data(config)
    train_transform_, eval_transform_ = _transforms(config)
    vit_options = dict(segmentation=config.segmentation, scene_targets=scene_targets if vit else None)
    if vit and scene_targets is None:
        vit_options["scene_targets"] = {}  # every image: no scene label (-100), the scene loss is 0
    if config.concept:
        if not config.scene_labels:
            raise ValueError("training an ISN for a concept needs --scene-labels (the label_scenes CSV)")
        keep_ids = read_keep_ids(config.scene_labels, config.concept, config.scene_min_probability)
        if not keep_ids:
            raise ValueError(f"no training image belongs to concept {config.concept!r}")
    train_set = ShardStream(config.train_shards, partitionings=partitionings, seed=config.seed,
                            transform=train_transform_,
                            shuffle=True, shuffle_buffer=config.shuffle_buffer, keep_ids=keep_ids,
                            select=SplitSide(split, held_out=False) if split else None, encoded=config.gpu_decode,
                            **vit_options)
    # Validation runs on the main process over the whole held-out set, whatever the world size. Split while
    # training, it is the held-out side of the training shards (of the concept's images, for an ISN).
    val_set = ShardStream(config.val_shards or config.train_shards, partitionings=partitionings, shuffle=False,
                          rank=0, world_size=1, keep_ids=keep_ids if split else None,
                          select=SplitSide(split, held_out=True) if split else None,
                          transform=eval_transform_, encoded=config.gpu_decode, **vit_options)
    return train_set, val_set, keep_ids


def check_validation_set(config: TrainConfig, split: ValidationSplit | None, keep_ids: set[str] | None) -> dict:
    """How the validation set is kept apart from the training set, with its overlap figures (for the checkpoint
    and the model card). A validation image that is also a training image is refused unless allow_overlap."""
    def trained_on(sample) -> bool:
        return keep_ids is None or sample.id in keep_ids

    if split is not None:
        held = [s for s in read_samples(config.train_shards) if trained_on(s)
                and split.holds_out(s.id, s.author, s.lat, s.lon)]
        training = (s for s in read_samples(config.train_shards) if trained_on(s)
                    and not split.holds_out(s.id, s.author, s.lat, s.lon))
        protocol = f"{split.describe()} from the training shards"
    else:
        held = list(read_samples(config.val_shards))
        training = (s for s in read_samples(config.train_shards) if trained_on(s))
        made = read_index(config.val_shards).get("split") or {}
        protocol = (f"{made['description']} by preprocess_images ({config.val_shards})" if made.get("description")
                    else f"a separate shard folder ({config.val_shards})")
    overlap = find_overlap(held, training)
    if overlap.shared_ids and not config.allow_overlap:
        raise ValueError(f"{overlap.shared_ids} of the {overlap.evaluated} validation images are also training "
                         f"images (e.g. {'; '.join(overlap.examples[:2])}), so validation would score photos the "
                         "network has seen. Use a validation set without them, or --allow-overlap to train anyway "
                         "(the figure is then recorded with the checkpoint and on the model card).")
    return {"protocol": protocol, "split": split.to_dict() if split else None, "overlap": overlap.to_dict(),
            "allowed_overlap": bool(config.allow_overlap and overlap.overlapping)}


def _check_resume(resumed: dict, path: Path, config: TrainConfig) -> None:
    """Refuse to continue a run with another network or other classes, in a sentence rather than a size mismatch."""
    if resumed["backbone"] != config.backbone:
        raise ValueError(f"{path} was trained with backbone {resumed['backbone']!r}, and this run asks for "
                         f"{config.backbone!r}: resume with --backbone {resumed['backbone']}, or start a new run in "
                         "another --output folder.")
    if config.partitionings:
        given = load_partitionings(config.partitionings)
        stored = resumed["partitionings"]
        if [p.tokens for p in given] != [p.tokens for p in stored]:
            raise ValueError(f"{path} was trained on partitionings of {'/'.join(str(len(p)) for p in stored)} cells "
                             f"and the files given have {'/'.join(str(len(p)) for p in given)} cells"
                             + (" (same sizes, other cells)" if [len(p) for p in given] == [len(p) for p in stored]
                                else "") + ": resume with the run's own cell files, or start a new run in another "
                             "--output folder.")


def train(config: TrainConfig) -> dict:
    """Run (or resume) training; returns the last epoch's metrics and the checkpoint paths.

    Set-up, then per epoch `train_one_epoch`, the learning-rate step, `evaluate` on the validation set and the
    checkpoints (rank 0), in the shape of torchvision's reference classification script.
    """
    runtime = start_runtime(config.device)
    output = Path(config.output_dir)
    if runtime.is_main:
        output.mkdir(parents=True, exist_ok=True)
    resume_path = _resume_path(config, output)
    resumed = load_checkpoint(resume_path) if resume_path else None

    if resumed is not None:
        _check_resume(resumed, resume_path, config)
        partitionings = resumed["partitionings"]
        done = int(resumed["epoch"])
        if done >= config.epochs:
            _say(runtime, f"{resume_path} has already completed {done} of {config.epochs} epochs: nothing to train. "
                          "Raise --epochs to train longer.")
            if runtime.distributed:
                torch.distributed.destroy_process_group()
            history = resumed["history"]
            return {"metrics": history[-1] if history else {}, "history": history, "last": str(output / "last.pt"),
                    "best": str(output / "best.pt"), "metrics_csv": str(output / "metrics.csv"),
                    "best_val_loss": resumed["best_val_loss"], "steps": [], "complete": True,
                    "validation": resumed["validation"]}
        _say(runtime, f"resumed from epoch {done} ({resume_path}): training epochs {done + 1} to {config.epochs}")
    else:
        partitionings = load_partitionings(config.partitionings)
    num_classes = [len(p) for p in partitionings]
    parents = torch.as_tensor(parent_matrix(partitionings) if len(partitionings) > 1
                              else np.arange(num_classes[0])[:, None])
    seed_everything(config.seed + runtime.rank)
    split = _validation_split(config)
    train_set, val_set, keep_ids = _datasets(config, partitionings, split)
    if train_set.usable_samples() == 0:
        raise ValueError(f"{config.train_shards}: no training image has a class in every partitioning"
                         + (f" and belongs to concept {config.concept!r}" if config.concept else "")
                         + (" and is on the training side of the split" if split else "") + ": nothing to train on.")
    if val_set.usable_samples() == 0:
        raise ValueError("the validation set is empty" + (
            f": {split.describe()} left no image on the validation side. Raise --val-fraction or give --val-shards."
            if split else f": {config.val_shards} holds no image with a class in every partitioning, so the "
            "validation figures would mean nothing."))
    validation = check_validation_set(config, split, keep_ids)
    overlap = validation["overlap"]
    _say(runtime, f"validation: {overlap['evaluated']} images, {validation['protocol']}; "
                  f"{overlap['overlapping']} are training photos by id or (author, coordinate), "
                  f"{overlap['shared_authors']} have an author with training photos")

    pretrained = config.pretrained if resumed is None else None
    if is_vit(config.backbone):
        model = ViTGeoNetwork(config.backbone, num_classes, scene_classes=config.scene_classes,
                              seg_channels=3 if config.segmentation else 0, image_size=config.crop_size,
                              pretrained_path=pretrained)
    else:
        model = build_network(config.backbone, num_classes, pretrained=pretrained,
                              embedding_dim=config.embedding_dim if config.contrastive_weight > 0 else None)
    precision = _resolve_precision(config, runtime)
    channels_last = config.channels_last if config.channels_last is not None else runtime.device.type == "cuda"
    model = model.to(runtime.device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(config.milestones),
                                                     gamma=config.gamma)
    scaler = torch.amp.GradScaler(runtime.device.type) if precision == "fp16" else None
    start_epoch, history, best = 0, [], None
    if resumed is not None:
        model.load_state_dict(resumed["model"])
        optimizer.load_state_dict(resumed["optimizer"])
        scheduler.load_state_dict(resumed["scheduler"])
        if scaler is not None and resumed["scaler"]:
            scaler.load_state_dict(resumed["scaler"])
        start_epoch, history, best = int(resumed["epoch"]), resumed["history"], resumed["best_val_loss"]
        restore_rng(resumed["rng"])

    raw_model = model
    if runtime.distributed:
        model = nn.parallel.DistributedDataParallel(
            model, device_ids=[runtime.local_rank] if runtime.device.type == "cuda" else None)
    step_model = torch.compile(model) if config.compile else model

    metrics_path = output / "metrics.csv"
    last, steps_run = {}, []
    for epoch in range(start_epoch, config.epochs):
        train_set.set_epoch(epoch)
        epoch_result = train_one_epoch(
            step_model, _loader(train_set, config, runtime, config.batch_size), optimizer=optimizer,
            scaler=scaler, runtime=runtime, config=config, precision=precision, channels_last=channels_last,
            epoch=epoch, total_steps=epoch_steps(train_set, config, runtime),
            num_heads=len(num_classes) + (1 if is_vit(config.backbone) else 0))
        steps_run.append(epoch_result.steps)
        if epoch_result.images == 0:
            raise ValueError(f"{config.train_shards}: no training image has a class in every partitioning"
                             + (f" and belongs to concept {config.concept!r}" if config.concept else ""))
        scheduler.step()

        if runtime.is_main:
            row = epoch_result.row(epoch + 1, partitionings)
            row.update(evaluate(raw_model, _loader(val_set, config, runtime, config.batch_size),
                                partitionings=partitionings, parents=parents, runtime=runtime, config=config,
                                precision=precision, channels_last=channels_last, progress=config.progress))
            history.append(row)
            _write_metrics(metrics_path, row)
            improved = best is None or row["val_loss"] < best
            if improved:
                best = row["val_loss"]
            save = dict(model=raw_model, optimizer=optimizer, scheduler=scheduler, scaler=scaler, epoch=epoch + 1,
                        config=config, partitionings=partitionings, history=history, best=best,
                        validation=validation)
            save_checkpoint(output / "last.pt", **save)
            if improved:
                save_checkpoint(output / "best.pt", **save)
            last = row
        if runtime.distributed:
            torch.distributed.barrier()
    result = {"metrics": last, "history": history, "last": str(output / "last.pt"),
              "best": str(output / "best.pt"), "metrics_csv": str(metrics_path), "best_val_loss": best,
              "steps": steps_run, "validation": validation}
    if runtime.distributed:
        torch.distributed.destroy_process_group()
    return result

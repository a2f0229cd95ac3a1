"""`train` with no schedule options trains on the paper's schedule: the values are read from the reference facts
(TIB's PyTorch base(M) release), so a changed default fails here instead of drifting silently."""
from __future__ import annotations

import argparse
import re

import pytest

from predictor.ml.train.cli import add_train_arguments, config_from_options
from predictor.ml.train.loop import TrainConfig
from predictor.ml.train.shards import train_transform
from tests.conftest import SHARED

FACTS = SHARED / "reference" / "geoestimation-facts.md"
REQUIRED = ["--train-shards", "t", "--val-shards", "v", "--partitionings", "c.csv", "--output", "o"]


@pytest.fixture(scope="module")
def paper() -> dict:
    if not FACTS.is_file():
        pytest.skip(f"{FACTS} is not present beside the repository")
    text = FACTS.read_text(encoding="utf-8")

    def find(pattern: str) -> tuple[str, ...]:
        found = re.findall(pattern, text)
        assert len(set(found)) == 1, f"the facts file should state {pattern!r} exactly once, found {found}"
        return found[0] if isinstance(found[0], tuple) else (found[0],)

    size, low, high = find(r"RandomResizedCrop\((\d+), scale=\(([\d.]+), ([\d.]+)\)\)")
    return {
        "lr": float(find(r"lr \*\*([\d.]+)\*\*")[0]),
        "momentum": float(find(r"momentum \*\*([\d.]+)\*\*")[0]),
        "weight_decay": float(find(r"weight_decay \*\*([\d.eE-]+)\*\*")[0]),
        "gamma": float(find(r"gamma \*\*([\d.]+)\*\*")[0]),
        "milestones": tuple(int(m) for m in find(r"milestones \*\*\[([\d, ]+)\]\*\*")[0].split(",")),
        "epochs": int(find(r"max_epochs \*\*(\d+)\*\*")[0]),
        "batch_size": int(find(r"batch \*\*(\d+)\*\*")[0]),
        "crop_size": int(size),
        "crop_scale": (float(low), float(high)),
    }


def test_the_facts_give_the_schedule_the_issue_names(paper):
    # Guards the parsing above: these are the figures issue 5 quotes from the paper.
    assert paper == {"lr": 0.01, "momentum": 0.9, "weight_decay": 1e-4, "gamma": 0.5,
                     "milestones": (4, 8, 12, 13, 14, 15), "epochs": 15, "batch_size": 128, "crop_size": 224,
                     "crop_scale": (0.66, 1.0)}


def _schedule(config: TrainConfig) -> dict:
    return {"lr": config.lr, "momentum": config.momentum, "weight_decay": config.weight_decay,
            "gamma": config.gamma, "milestones": tuple(config.milestones), "epochs": config.epochs,
            "batch_size": config.batch_size, "crop_size": config.crop_size, "crop_scale": tuple(config.crop_scale)}


def test_training_config_defaults_are_the_papers_schedule(paper):
    assert _schedule(TrainConfig(train_shards="t", val_shards="v", partitionings=["c.csv"], output_dir="o")) == paper


def test_command_line_defaults_are_the_papers_schedule(paper):
    from predictor.management.commands.train import Command

    parser = argparse.ArgumentParser()  # `python -m predictor.ml.train`, what torchrun launches
    add_train_arguments(parser)
    assert _schedule(config_from_options(vars(parser.parse_args(REQUIRED)))) == paper
    django_parser = Command().create_parser("manage.py", "train")  # `manage.py train`
    assert _schedule(config_from_options(vars(django_parser.parse_args(REQUIRED)))) == paper


def test_training_augmentation_is_the_papers_crop_and_flip(paper):
    from torchvision import transforms

    steps = train_transform(paper["crop_size"], paper["crop_scale"]).transforms
    crop = next(step for step in steps if isinstance(step, transforms.RandomResizedCrop))
    assert crop.size == (paper["crop_size"], paper["crop_size"])
    assert tuple(crop.scale) == paper["crop_scale"]
    assert any(isinstance(step, transforms.RandomHorizontalFlip) and step.p == 0.5 for step in steps)
    default = next(step for step in train_transform().transforms if isinstance(step, transforms.RandomResizedCrop))
    assert default.size == crop.size and tuple(default.scale) == paper["crop_scale"]

"""What a model card says beside its accuracy figures: the protocol behind every figure (training crops, how the
validation set was kept apart, the serving crops the tests ran with), how far each evaluated set overlaps the
training data, how the predictions spread over the cells and how well their confidence is calibrated, and which
parts of the bundle are untrained.

`training_record` is stored in the bundle's config.json (`training`); `card_sections` becomes the card's extra
sections. Both are plain data, so bundle.py only writes them.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

from predictor.ml.evaluation import PredictionSpread
from predictor.ml.train.holdout import Overlap

TRAIN_SHORT_SIDE = 320  # preprocess_images' default; the shards' index.json says what a run really used


@dataclass
class TestResult:
    """One test set measured at export: accuracy, how it was checked against the training data, the spread."""

    name: str
    accuracy: dict[str, float]
    counts: dict
    overlap: Overlap | None = None
    overlap_note: str = ""  # why the overlap was not checked, when it was not
    allowed_overlap: bool = False
    spread: PredictionSpread | None = None

    @property
    def label(self) -> str:
        return f"{self.name} ({self.counts.get('evaluated', 0)} images; serving protocol)"

    def to_dict(self) -> dict:
        return {"accuracy": self.accuracy, "counts": self.counts,
                "overlap": self.overlap.to_dict() if self.overlap else None, "overlap_note": self.overlap_note,
                "allowed_overlap": self.allowed_overlap, "spread": self.spread.to_dict() if self.spread else None}


def validation_crop(crop_size: int) -> str:
    """The validation transform of the training loop (shards.eval_transform), in words."""
    return f"shorter side {int(math.floor(crop_size * 256 / 224))} px, centre crop {crop_size} px"


def serving_crop(crops: dict) -> str:
    """The engine's test-time crops (CropSpec.to_config), in words."""
    count = {"five": "five", "three": "three", "center": "one centre"}.get(crops.get("crops"), crops.get("crops"))
    resize = crops.get("crop_size") if crops.get("crops") == "three" else crops.get("resize")
    return (f"shorter side {resize} px, {count} {crops.get('crop_size')} px crops, {crops.get('aggregation')} over "
            "the crops")


def _absolute(folder: str | None) -> str | None:
    # Training commands are given paths relative to where they ran; evaluate may run anywhere later.
    return os.path.abspath(folder) if folder else None


def training_record(checkpoints: dict[str, dict]) -> dict:
    """config.json's `training` entry from loaded training checkpoints ({"base": state} or {concept: state})."""
    networks = {}
    for concept, state in checkpoints.items():
        config = state["config"]
        networks[concept] = {
            "backbone": state["backbone"], "epochs_trained": int(state["epoch"]),
            "epochs_planned": int(config.get("epochs", state["epoch"])),
            "concept": config.get("concept"), "train_shards": _absolute(config.get("train_shards")),
            "val_shards": _absolute(config.get("val_shards")), "crop_size": int(config.get("crop_size", 224)),
            "crop_scale": list(config.get("crop_scale", (0.66, 1.0))),
            "train_images": int(state["history"][-1]["train_images"]) if state["history"] else None,
            "validation": state.get("validation"),
        }
    sizes = sorted({n["crop_size"] for n in networks.values()})
    return {"networks": networks, "crop_size": sizes[0] if len(sizes) == 1 else sizes,
            "augmentation": "RandomResizedCrop (scale {}–{}) and horizontal flip".format(
                *next(iter(networks.values()))["crop_scale"])}


def _validation_lines(concept: str, network: dict) -> list[str]:
    who = "" if concept == "base" else f"ISN {concept}: "
    validation = network.get("validation")
    if not validation:
        return [f"- {who}validation: how it was kept apart from the training data was not recorded (a checkpoint "
                "from before this was recorded)"]
    overlap = Overlap.from_dict(validation["overlap"])
    line = (f"- {who}validation: {validation['protocol']}; {validation_crop(network['crop_size'])}; "
            f"{overlap.summary()}")
    if validation.get("allowed_overlap"):
        line += " ALLOWED with --allow-overlap: the validation figures include photos the network was trained on."
    return [line]


def card_sections(*, training: dict | None, crops: dict, tests: list[TestResult], histories: dict[str, list[dict]],
                  scene_note: str, scene_untrained: bool, untrained_networks: bool = False) -> list[list]:
    """The card's extra sections as [title, [lines]] pairs."""
    sections = []
    protocol = []
    if training:
        for concept, network in training["networks"].items():
            who = "" if concept == "base" else f"ISN {concept}: "
            scale = network["crop_scale"]
            epochs, planned = network["epochs_trained"], network.get("epochs_planned", network["epochs_trained"])
            protocol.append(f"- {who}trained {epochs} epoch{'' if epochs == 1 else 's'}"
                            + (f" (the checkpoint with the lowest validation loss of a {planned}-epoch run)"
                               if planned != epochs else "") + " on "
                            f"{network['train_images'] or 'an unrecorded number of'} images, {network['backbone']}, "
                            f"RandomResizedCrop {network['crop_size']} px (scale {scale[0]:g}–{scale[1]:g}) and "
                            f"horizontal flip of shards with a {TRAIN_SHORT_SIDE} px shorter side")
            protocol += _validation_lines(concept, network)
    protocol.append(f"- Serving and every test row: {serving_crop(crops)}, then f* (the hierarchy) as the app "
                    "predicts")
    if training:
        sizes = {n["crop_size"] for n in training["networks"].values()}
        if any(size != crops.get("crop_size") for size in sizes):
            protocol.append(f"- WARNING: trained on {'/'.join(map(str, sorted(sizes)))} px crops but serves "
                            f"{crops.get('crop_size')} px crops, so photos reach the network at another scale than "
                            "it learned; the test rows measure exactly that mismatch.")
    sections.append(["Evaluation protocol", protocol])

    if tests:
        overlap_lines = []
        for test in tests:
            if test.overlap is None:
                overlap_lines.append(f"- {test.name}: not checked: {test.overlap_note}")
                continue
            line = f"- {test.name}: {test.overlap.summary('training and validation images')}"
            if test.allowed_overlap:
                line += (f". ALLOWED with --allow-overlap: {test.overlap.overlapping} of its photos are training "
                         "photos, so its figures are not a test of unseen photos.")
            overlap_lines.append(line)
        sections.append(["Overlap with the training data", overlap_lines])

    spread_lines = []
    for concept, history in histories.items():
        rows = [r for r in history if r.get("val_loss") is not None]
        if not rows:
            continue
        best = min(rows, key=lambda r: r["val_loss"])
        distinct = best.get("val_distinct_cells_hierarchy")
        if distinct is None:
            continue
        who = "validation" if concept == "base" else f"ISN {concept} validation"
        share = float(best.get("val_top_cell_share_hierarchy", float("nan")))
        spread_lines.append(f"- {who} (best epoch {best['epoch']}): {distinct} distinct f* cells for "
                            f"{best['val_images']} images; the most common takes {100 * share:.1f} %")
        if best["val_images"] >= 10 and share >= 0.5:
            spread_lines.append(f"  WARNING: the {who} predictions collapse onto one cell.")
    for test in tests:
        if test.spread is None or not test.spread.images:
            continue
        spread_lines += [f"- {test.name}: {line}" for line in test.spread.lines()]
        if test.spread.warning():
            spread_lines.append(f"  WARNING: {test.name}: {test.spread.warning()}.")
    if spread_lines:
        sections.append(["Prediction spread and calibration", spread_lines])

    untrained = []
    if untrained_networks:
        untrained.append("- Geolocation networks: UNTRAINED (random weights).")
    if scene_untrained:
        untrained.append(f"- Scene classifier: UNTRAINED ({scene_note}): the scene shown for a photo and, in an ISN "
                         "bundle, the network a photo is routed to mean nothing.")
    sections.append(["Untrained parts", untrained or ["- None: every part has trained weights."]])
    return sections

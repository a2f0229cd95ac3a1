"""Bundle a trained multi-task ViT checkpoint (train --backbone vit_*) as a "vit" bundle: the network, the
segmentation network it was trained with (for RGB + segmentation networks), the partitionings, and a model card
with the training data, the validation protocol and figures, and which parts are untrained."""
from __future__ import annotations

import json
from pathlib import Path

from predictor.ml.preprocess import CropSpec
from predictor.ml.segmentation import SegmentationNetwork, load_segmenter
from predictor.ml.train.card import card_sections, training_record
from predictor.ml.train.export import validation_sections
from predictor.ml.train.loop import load_checkpoint, network_from_checkpoint
from predictor.ml.train.shards import read_index
from predictor.ml.vit import save_vit_bundle
from predictor.ml.vit_network import ViTGeoNetwork


def _shard_segmentation(state: dict) -> dict | None:
    """What preprocess_images recorded about the segmentation network of the run's training shards."""
    folder = state["config"].get("train_shards")
    try:
        return read_index(folder).get("segmentation") if folder else None
    except (OSError, ValueError):
        return None


def export_vit_bundle(output: str | Path, *, checkpoint: str | Path, name: str, segmentation: str | Path | None = None,
                      segmentation_arch: str | None = None, training_data: str = "not stated", notes: str = "",
                      overwrite: bool = False) -> Path:
    state = load_checkpoint(checkpoint)
    network = network_from_checkpoint(state)
    if not isinstance(network, ViTGeoNetwork):
        raise ValueError(f"{checkpoint} is a {state['backbone']} checkpoint, not a ViT: use export_bundle")
    segmenter: SegmentationNetwork | None = None
    if network.seg_channels:
        recorded = _shard_segmentation(state) or {}
        if segmentation is None:
            raise ValueError("this network takes a segmentation map: give --segmentation WEIGHTS, the segmentation "
                             "network the training shards were made with"
                             + (f" ({recorded['arch']}, {recorded['num_classes']} classes)" if recorded else ""))
        arch = segmentation_arch or recorded.get("arch") or "deeplabv3_resnet50"
        if recorded and recorded.get("arch") != arch:
            raise ValueError(f"the training shards were segmented by {recorded['arch']}, not {arch}: serve with the "
                             "same segmentation network the network learned from")
        segmenter = load_segmenter(segmentation, arch=arch, num_classes=int(recorded.get("num_classes", 21)))
    elif segmentation is not None:
        raise ValueError("this network takes RGB only: it needs no --segmentation")
    config = state["config"]
    training = training_record({"base": state})
    training["networks"]["base"]["scene"] = {
        "classes": network.scene_classes, "labels": config.get("scene_labels"),
        "weight": config.get("scene_weight"), "scene_of_interest": config.get("scene_of_interest") or "all"}
    histories = {"base": state["history"]}
    crops = CropSpec(size=network.image_size, resize=max(256, round(network.image_size * 256 / 224)),
                     scene_size=network.image_size)
    scene_untrained = not config.get("scene_labels") or not config.get("scene_weight")
    validation = validation_sections(histories, crop_sizes={"base": training["networks"]["base"]["crop_size"]},
                                     validations={"base": state.get("validation")})
    scene_line = (f"- Scene head: {network.scene_classes} classes, trained on {config.get('scene_labels')} with "
                  f"lambda {config.get('scene_weight')}" if not scene_untrained else
                  "- Scene head: UNTRAINED (no scene labels or --scene-weight 0): the scene it names is noise")
    if config.get("scene_of_interest") not in (None, "all"):
        scene_line += f"; trained on {config['scene_of_interest']} photos only"
    best = min((r for r in state["history"] if r.get("val_top1_scene") is not None),
               key=lambda r: r["val_loss"], default=None)
    if best is not None:
        scene_line += f"; validation scene accuracy {100 * float(best['val_top1_scene']):.1f}%"
    sections = card_sections(training=training, crops=crops.to_config(), tests=[], histories=histories,
                             scene_note="", scene_untrained=False)
    sections.append(["Scene and segmentation", [scene_line] + (
        [f"- Segmentation network: {segmenter.arch} ({segmenter.num_classes} classes) from {Path(segmentation).name}"]
        if segmenter is not None else [])])
    card = {"training_data": training_data, "notes": notes, "accuracy": validation or "not measured",
            "sections": sections}
    return save_vit_bundle(output, name=name, network=network, partitionings=state["partitionings"],
                           segmenter=segmenter, model_card=card, crops=crops, overwrite=overwrite,
                           training=json.loads(json.dumps(training)), scene_untrained=scene_untrained)

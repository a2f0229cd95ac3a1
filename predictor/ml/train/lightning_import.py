"""Reading TIB's PyTorch base(M, f*) release (PyTorch Lightning 1.0.1 `.ckpt` + `hparams.yaml`) into GeoNetwork
weights: `model.{0,1,4..7}.*` (torchvision ResNet naming inside) -> `body.{conv1,bn1,layer1..4}.*`,
`classifier.{i}.*` -> `heads.{i}.*`.

The checkpoint is read with `torch.load(weights_only=True)`. Lightning stores its hyper-parameters as its own
classes, which that refuses; then a restricted unpickler that builds tensors and plain containers only (every
other class becomes an inert placeholder, nothing is called) reads the file instead.
"""
from __future__ import annotations

import pickle
import re
import types
from pathlib import Path

import torch
import yaml

from predictor.ml.network import GeoNetwork

# nn.Sequential children of the Lightning model's backbone -> torchvision ResNet attribute names.
BACKBONE_CHILDREN = {"0": "conv1", "1": "bn1", "4": "layer1", "5": "layer2", "6": "layer3", "7": "layer4"}


class _Placeholder(dict):
    """Stands in for any non-tensor class in a checkpoint: keeps dict-like state as data, runs no code."""

    def __init__(self, *args, **kwargs):
        super().__init__()

    def __setstate__(self, state):
        if isinstance(state, dict):
            self.update(state)


def _allowed(module: str, name: str):
    if module == "collections" and name == "OrderedDict":
        from collections import OrderedDict
        return OrderedDict
    if module in ("torch._utils", "torch") and name.startswith("_rebuild"):
        return getattr(__import__(module, fromlist=[name]), name)
    if module == "torch" and (name.endswith("Storage") or name in ("Size", "device") or
                              isinstance(getattr(torch, name, None), torch.dtype)):
        return getattr(torch, name)
    if module == "torch.storage" and name == "UntypedStorage":
        return torch.UntypedStorage
    if module == "builtins" and name in ("set", "frozenset", "slice", "complex"):
        import builtins
        return getattr(builtins, name)
    return None


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        found = _allowed(module, name)
        return found if found is not None else _Placeholder


restricted_pickle = types.SimpleNamespace(Unpickler=_RestrictedUnpickler, load=pickle.load,
                                          __name__="restricted_pickle")


def read_checkpoint(path: str | Path) -> dict:
    """The checkpoint dict; `weights_only=True` first, the restricted unpickler for Lightning's own classes."""
    try:
        return torch.load(Path(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        return torch.load(Path(path), map_location="cpu", weights_only=False, pickle_module=restricted_pickle)


def read_hparams(path: str | Path) -> dict:
    """Lightning's hparams.yaml as a dict, read with PyYAML's safe loader (plain data only: a file that asks for
    Python objects is refused, not executed)."""
    text = Path(path).read_text(encoding="utf-8")
    try:
        hparams = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ValueError(f"{path}: not a readable hparams.yaml ({error})") from None
    if hparams is None:
        return {}
    if not isinstance(hparams, dict):
        raise ValueError(f"{path}: hparams.yaml should hold a mapping of names to values, not a "
                         f"{type(hparams).__name__}")
    return hparams


def lightning_to_geonetwork(state_dict: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[int]]:
    """Rename a Lightning base(M) state dict to GeoNetwork keys; returns (state, classes per head)."""
    renamed, heads = {}, {}
    for key, value in state_dict.items():
        match = re.fullmatch(r"model\.(\d+)\.(.+)", key)
        if match and match.group(1) in BACKBONE_CHILDREN:
            renamed[f"body.{BACKBONE_CHILDREN[match.group(1)]}.{match.group(2)}"] = value
            continue
        match = re.fullmatch(r"classifier\.(\d+)\.(weight|bias)", key)
        if match:
            renamed[f"heads.{match.group(1)}.{match.group(2)}"] = value
            if match.group(2) == "weight":
                heads[int(match.group(1))] = int(value.shape[0])
            continue
        raise ValueError(f"unexpected key {key!r}: not a TIB base(M) Lightning checkpoint")
    if not heads or sorted(heads) != list(range(len(heads))):
        raise ValueError("the checkpoint has no classifier.<i> heads numbered from 0")
    return renamed, [heads[i] for i in range(len(heads))]


def backbone_of(state: dict[str, torch.Tensor], hparams: dict | None) -> str:
    """resnet50/101/152 from hparams' `arch`, else from the number of blocks in layer3."""
    arch = (hparams or {}).get("arch")
    if arch in ("resnet50", "resnet101", "resnet152"):
        return arch
    blocks = {int(k.split(".")[2]) for k in state if k.startswith("body.layer3.")}
    return {6: "resnet50", 23: "resnet101", 36: "resnet152"}.get(len(blocks), "resnet50")


def load_lightning_checkpoint(path: str | Path, *, hparams_path: str | Path | None = None,
                              backbone: str | None = None) -> tuple[GeoNetwork, dict]:
    """A GeoNetwork with the checkpoint's weights, and facts about the checkpoint for the model card."""
    checkpoint = read_checkpoint(path)
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ValueError(f"{path}: no state_dict: not a Lightning checkpoint")
    hparams = None
    if hparams_path:
        hparams = read_hparams(hparams_path)
    state, num_classes = lightning_to_geonetwork(dict(checkpoint["state_dict"]))
    backbone = backbone or backbone_of(state, hparams)
    network = GeoNetwork(backbone, num_classes)
    missing, unexpected = network.load_state_dict(state, strict=False)
    # torchvision adds BN `num_batches_tracked` buffers that old checkpoints may lack; those are harmless.
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise ValueError(f"{path}: does not fit a {backbone} GeoNetwork (missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]})")
    facts = {"epoch": checkpoint.get("epoch"), "global_step": checkpoint.get("global_step"),
             "lightning_version": checkpoint.get("pytorch-lightning_version"), "backbone": backbone,
             "num_classes": num_classes, "hparams": hparams}
    return network.eval(), facts

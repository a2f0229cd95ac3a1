"""The model-kind registry: config.json's "kind" -> the `ModelKind` that checks and loads bundles of that kind, and
the two entry points every caller uses, `verify_bundle` and `load_bundle`.

Adding a kind is one module that defines its model class and a `ModelKind` (see predictor/ml/isn.py and geoclip.py,
and docs/predictor.md "How to add a model kind"), plus one line below. Bundles written before kinds existed have no
"kind" key: GeoCLIP bundles say "geoclip" in their architecture, every other one is an ISN bundle.
"""
from __future__ import annotations

from pathlib import Path

import torch

from .bundle import BundleError, bundle_directory, read_config, verify_files
from .geoclip import GEOCLIP_KIND
from .isn import ISN_KIND
from .model import GeoModel, ModelKind
from .swc import SWC_KIND
from .vit import VIT_KIND

_KINDS: dict[str, ModelKind] = {}


def register_kind(kind: ModelKind, *, replace: bool = False) -> ModelKind:
    """Make bundles whose config.json says `"kind": kind.name` load with `kind`. Returns it."""
    if not kind.name or not isinstance(kind.name, str):
        raise ValueError("a model kind needs a name")
    if kind.name in _KINDS and not replace and _KINDS[kind.name] is not kind:
        raise ValueError(f"a model kind named {kind.name!r} is already registered")
    _KINDS[kind.name] = kind
    return kind


def unregister_kind(name: str) -> None:
    _KINDS.pop(name, None)


# The built-in kinds, one line each.
register_kind(ISN_KIND)
register_kind(GEOCLIP_KIND)
register_kind(SWC_KIND)
register_kind(VIT_KIND)


def kind_names() -> list[str]:
    return sorted(_KINDS)


def kind_name(config: dict) -> str:
    """The kind a config.json declares; for bundles from before kinds existed, the kind they were read as."""
    if "kind" in config:
        return config["kind"]
    architecture = config.get("architecture")
    if isinstance(architecture, dict) and architecture.get("type") == GEOCLIP_KIND.name:
        return GEOCLIP_KIND.name
    return ISN_KIND.name


def get_kind(name: str) -> ModelKind:
    try:
        return _KINDS[name]
    except (KeyError, TypeError):
        raise BundleError(f"this GeoWeb cannot read bundles of kind {name!r} (it knows: "
                          f"{', '.join(kind_names())})") from None


def kind_of(config: dict) -> ModelKind:
    return get_kind(kind_name(config))


def verify_bundle(path: str | Path, *, check_weights: bool = True) -> dict:
    """Check a bundle directory: the container (config, every file present with its sha256), then its kind's
    config keys, the files those name, and (with `check_weights`) every weight file's tensor shapes.

    Returns the config; raises `BundleError` with a message naming the first problem found.
    """
    path = Path(path)
    config = read_config(path)
    kind = kind_of(config)
    verify_files(path, config, kind.validate(path, config))
    if check_weights:
        kind.check_weights(path, config)
    return config


def load_bundle(path: str | Path, *, device: str | torch.device = "cpu", verify: bool = True) -> GeoModel:
    """Load a bundle directory or archive onto `device` with its kind's loader, checking it first."""
    path = bundle_directory(path)
    if verify:
        config = verify_bundle(path, check_weights=True)
    else:
        config = read_config(path)
    return kind_of(config).load(path, config).to(device)

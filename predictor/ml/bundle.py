"""Model bundles: a directory (or a .tar/.tar.gz/.zip of one) holding everything needed to serve a model.

Layout::

    config.json                  architecture, input/crops, partitioning names, concepts, sha256 of every file
    MODEL_CARD.md                training data, measured accuracy, the "untrained" flag
    partitionings/<name>.csv     the paper's cell CSV format, coarse -> fine
    weights/geo_<concept>.safetensors   one per S3 concept (ISN), or weights/geo_base.safetensors (one network)
    weights/scene.safetensors    Places365 scene classifier (365-way head)
    scene/places365_s3.csv       the 365 -> S3 mapping (predictor.ml.scenes CSV format)

Weights are safetensors only; nothing in a bundle is ever unpickled.

API::

    save_bundle(path, *, name, networks, partitionings, scene_network, scene_mapping, model_card,
                crops=None, untrained=False, partitioning_names=None, overwrite=False) -> Path
        networks: {"indoor"|"natural"|"urban": GeoNetwork} or {"base": GeoNetwork}
        model_card: {"training_data": str, "accuracy": {dataset: {threshold_km: fraction}} or str,
                     "notes": str}  (all optional)
    save_model(path, model: GeoModel, *, model_card=None, name=None) -> Path
    verify_bundle(path, *, check_weights=True) -> dict (the config)      raises BundleError
    load_bundle(path, *, device="cpu", verify=True) -> GeoModel            raises BundleError
    make_tiny_bundle(path, *, seed=0, name="tiny-untrained") -> Path
"""
from __future__ import annotations

import hashlib
import json
import re
import shutil
import tarfile
import tempfile
import zipfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from .hierarchy import Hierarchy
from .isn import BASE, ISN, SceneClassifier
from .model import GeoModel
from .network import GeoNetwork
from .partitions import Partitioning, parent_matrix
from .prediction import S3_CONCEPTS
from .preprocess import CropSpec

FORMAT = "geoweb-bundle"
FORMAT_VERSION = 1
CONFIG = "config.json"
MODEL_CARD = "MODEL_CARD.md"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".zip")


class BundleError(Exception):
    """A bundle is missing, malformed, corrupted or does not match its own config."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _state_dict(network: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous() for k, v in network.state_dict().items()}


def _model_card_text(name: str, untrained: bool, card: dict, config: dict) -> str:
    lines = [f"# Model card: {name}", ""]
    if untrained:
        lines += ["**UNTRAINED**: random weights. Its predictions are meaningless; it exists to exercise the app.", ""]
    arch = config["architecture"]
    lines += ["## Architecture", "",
              f"- Backbone: {arch['backbone']}, heads: {arch['num_classes']} "
              f"({', '.join(p['name'] for p in config['partitionings'])})",
              f"- Routing: {'ISN(M, f*, S3), one network per scene concept' if arch['routing'] == 'isn-s3' else 'one network for every photo'}",
              f"- Scene classifier: {config['scene']['backbone']} Places365 (365 classes) -> S3",
              f"- Test-time crops: {config['input']['crops']}, aggregation {config['input']['aggregation']}", "",
              "## Training data", "", str(card.get("training_data") or "not stated"), "",
              "## Measured accuracy", ""]
    accuracy = card.get("accuracy")
    if isinstance(accuracy, dict) and accuracy:
        for dataset, values in accuracy.items():
            if isinstance(values, dict):
                cells = ", ".join(f"{k} km: {100 * float(v):.1f}%" for k, v in values.items())
                lines.append(f"- {dataset}: {cells}")
            else:
                lines.append(f"- {dataset}: {values}")
    else:
        lines.append(str(accuracy) if accuracy else "not measured")
    for title, section in card.get("sections") or []:  # predictor.ml.train.card: protocol, overlap, spread
        lines += ["", f"## {title}", "", *section]
    if card.get("notes"):
        lines += ["", "## Notes", "", str(card["notes"])]
    return "\n".join(lines) + "\n"


def write_partitionings(path: Path, names: list[str], partitionings: list[Partitioning]) -> list[dict]:
    """Write each partitioning to partitionings/<name>.csv in a bundle; the config.json entries that list them."""
    entries = []
    for label, partitioning in zip(names, partitionings):
        rel = f"partitionings/{label}.csv"
        partitioning.to_csv(path / rel)
        entries.append({"name": label, "file": rel, "cells": len(partitioning)})
    return entries


def save_bundle(path: str | Path, *, name: str, networks: dict[str, GeoNetwork], partitionings: list[Partitioning],
                scene_network: GeoNetwork, scene_mapping, model_card: dict | None = None,
                crops: CropSpec | None = None, untrained: bool = False, partitioning_names: list[str] | None = None,
                overwrite: bool = False, training: dict | None = None, scene_untrained: bool = False) -> Path:
    """Write a bundle directory. `scene_mapping` is a `predictor.ml.scenes.SceneMapping`; `training` (how it was
    trained: crops, validation, data; see predictor.ml.train.card) is kept in config.json as it is."""
    if not NAME_PATTERN.match(name):
        raise BundleError(f"bundle name {name!r}: use letters, digits, '.', '_' or '-' (at most 64 characters)")
    path = Path(path)
    if path.exists():
        if not overwrite:
            raise BundleError(f"{path} already exists")
        shutil.rmtree(path)
    crops = crops or CropSpec()
    model_card = dict(model_card or {})
    isn = ISN(networks)  # validates the set of concepts and that the networks agree
    sizes = [len(p) for p in partitionings]
    if isn.num_classes != sizes:
        raise BundleError(f"network heads {isn.num_classes} do not match the partitionings' cell counts {sizes}")
    names = list(partitioning_names or (["coarse", "middle", "fine"] if len(partitionings) == 3
                                         else [p.name for p in partitionings]))
    if len(names) != len(partitionings) or len(set(names)) != len(names):
        raise BundleError(f"partitioning names {names} must be unique, one per partitioning")
    if len(partitionings) > 1:
        try:
            parent_matrix(partitionings)
        except ValueError as error:
            raise BundleError(str(error)) from None
    path.mkdir(parents=True)
    (path / "partitionings").mkdir()
    (path / "weights").mkdir()
    (path / "scene").mkdir()
    network_files = {}
    for concept in isn.concepts:
        rel = f"weights/geo_{concept}.safetensors"
        save_file(_state_dict(networks[concept]), str(path / rel), metadata={"concept": concept})
        network_files[concept] = rel
    save_file(_state_dict(scene_network), str(path / "weights/scene.safetensors"))
    scene_mapping.to_csv(path / "scene/places365_s3.csv")
    partitioning_entries = write_partitionings(path, names, partitionings)
    any_net = networks[isn.concepts[0]]
    config = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "name": name, "untrained": bool(untrained),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "architecture": {"backbone": any_net.backbone, "num_classes": any_net.num_classes,
                         "routing": "isn-s3" if isn.routed else "single"},
        "concepts": list(isn.concepts), "networks": network_files, "partitionings": partitioning_entries,
        "input": crops.to_config(),
        "scene": {"backbone": scene_network.backbone, "num_classes": 365, "weights": "weights/scene.safetensors",
                  "mapping": "scene/places365_s3.csv", "input": "whole photo resized to a square",
                  "untrained": bool(untrained or scene_untrained)},
        "model_card": MODEL_CARD,
    }
    if training is not None:
        config["training"] = training
    (path / MODEL_CARD).write_text(_model_card_text(name, untrained, model_card, config), encoding="utf-8")
    config["files"] = {rel: _sha256(path / rel) for rel in sorted(
        str(p.relative_to(path)) for p in path.rglob("*") if p.is_file() and p.name != CONFIG)}
    (path / CONFIG).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return path


def save_model(path: str | Path, model: GeoModel, *, model_card: dict | None = None, name: str | None = None,
               overwrite: bool = False) -> Path:
    """Save a loaded (or freshly trained) GeoModel as a bundle."""
    return save_bundle(path, name=name or model.name, networks=dict(model.isn.networks.items()),
                       partitionings=model.partitionings, scene_network=model.scene.network,
                       scene_mapping=model.scene_mapping, model_card=model_card or {}, crops=model.crops,
                       untrained=model.untrained, partitioning_names=model.partitioning_names, overwrite=overwrite,
                       training=model.config.get("training"), scene_untrained=model.scene_untrained)


# --- reading ------------------------------------------------------------------------------------------------------

def _safe_members_tar(archive: tarfile.TarFile) -> None:
    for member in archive.getmembers():
        if not (member.isfile() or member.isdir()):
            raise BundleError(f"archive entry {member.name!r} is a link or device: refused")


def extract_archive(archive: str | Path, destination: str | Path) -> Path:
    """Unpack a bundle archive safely (no absolute paths, '..', links) and return the bundle directory in it."""
    archive, destination = Path(archive), Path(destination)
    destination.mkdir(parents=True, exist_ok=True)
    try:
        if archive.name.endswith(".zip"):
            with zipfile.ZipFile(archive) as handle:
                for info in handle.infolist():
                    target = (destination / info.filename).resolve()
                    if not target.is_relative_to(destination.resolve()) or info.filename.startswith("/"):
                        raise BundleError(f"archive entry {info.filename!r} points outside the bundle: refused")
                handle.extractall(destination)
        else:
            with tarfile.open(archive) as handle:
                _safe_members_tar(handle)
                handle.extractall(destination, filter="data")
    except (tarfile.TarError, zipfile.BadZipFile, OSError) as error:
        raise BundleError(f"{archive}: not a readable bundle archive ({error})") from None
    if (destination / CONFIG).is_file():
        return destination
    children = [p for p in destination.iterdir() if p.is_dir()]
    if len(children) == 1 and (children[0] / CONFIG).is_file():
        return children[0]
    raise BundleError(f"{archive}: no {CONFIG} at the top of the archive or in its single folder")


def is_archive(path: str | Path) -> bool:
    return Path(path).name.endswith(ARCHIVE_SUFFIXES)


def _read_config(path: Path) -> dict:
    if not path.is_dir():
        raise BundleError(f"{path}: no such bundle directory")
    config_path = path / CONFIG
    if not config_path.is_file():
        raise BundleError(f"{path}: missing {CONFIG}")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BundleError(f"{config_path}: not valid JSON ({error})") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise BundleError(f"{config_path}: not a GeoWeb bundle config (format must be {FORMAT!r})")
    if config.get("format_version") != FORMAT_VERSION:
        raise BundleError(f"{config_path}: bundle format version {config.get('format_version')} is not supported "
                          f"(this code reads version {FORMAT_VERSION})")
    for key in ("name", "architecture", "concepts", "networks", "partitionings", "input", "scene", "files"):
        if key not in config:
            raise BundleError(f"{config_path}: missing key {key!r}")
    return config


def _referenced_files(config: dict) -> list[str]:
    return ([config["networks"][c] for c in config["concepts"]] + [p["file"] for p in config["partitionings"]]
            + [config["scene"]["weights"], config["scene"]["mapping"], config.get("model_card", MODEL_CARD)])


def _expected_shapes(backbone: str, num_classes: list[int]) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        network = GeoNetwork(backbone, num_classes)
    return {k: tuple(v.shape) for k, v in network.state_dict().items()}


def _check_weight_shapes(path: Path, rel: str, expected: dict[str, tuple[int, ...]]) -> None:
    try:
        with safe_open(str(path / rel), framework="pt") as handle:
            shapes = {k: tuple(handle.get_slice(k).get_shape()) for k in handle.keys()}
    except Exception as error:  # safetensors raises its own error types for corrupt headers
        raise BundleError(f"{rel}: not a readable safetensors file ({error})") from None
    missing = sorted(set(expected) - set(shapes))
    if missing:
        raise BundleError(f"{rel}: missing tensors, e.g. {missing[:3]} (does not match config.json's architecture)")
    unexpected = sorted(set(shapes) - set(expected))
    if unexpected:
        raise BundleError(f"{rel}: unexpected tensors, e.g. {unexpected[:3]}")
    for key, shape in expected.items():
        if shapes[key] != shape:
            raise BundleError(f"{rel}: shape mismatch for {key}: file has {list(shapes[key])}, "
                              f"config.json's architecture needs {list(shape)}")


def _is_geoclip(config: dict) -> bool:
    """GeoCLIP bundles (predictor.ml.geoclip) say so in config.json's architecture."""
    return isinstance(config.get("architecture"), dict) and config["architecture"].get("type") == "geoclip"


def verify_bundle(path: str | Path, *, check_weights: bool = True) -> dict:
    """Check a bundle directory: config, every file present with its sha256, partitioning sizes, weight shapes.

    Returns the config; raises `BundleError` with a message naming the first problem found.
    """
    path = Path(path)
    config = _read_config(path)
    files: dict = config["files"]
    for rel in _referenced_files(config):
        if rel not in files:
            raise BundleError(f"{path}: {rel} is used by config.json but has no checksum in its 'files' list")
    for rel, digest in files.items():
        target = (path / rel).resolve()
        if not target.is_relative_to(path.resolve()):
            raise BundleError(f"{path}: file entry {rel!r} points outside the bundle")
        if not target.is_file():
            raise BundleError(f"{path}: missing file {rel}")
        actual = _sha256(target)
        if actual != digest:
            raise BundleError(f"{path}: checksum mismatch for {rel} (config.json says {digest[:12]}..., "
                              f"the file is {actual[:12]}...): the file was changed or damaged")
    arch = config["architecture"]
    num_classes = [int(n) for n in arch["num_classes"]]
    if [int(p["cells"]) for p in config["partitionings"]] != num_classes:
        raise BundleError(f"{path}: partitioning sizes {[p['cells'] for p in config['partitionings']]} do not "
                          f"match the heads {num_classes}")
    if check_weights and _is_geoclip(config):
        from .geoclip import verify_geoclip_weights
        verify_geoclip_weights(path, config)
    elif check_weights:
        try:
            geo_shapes = _expected_shapes(arch["backbone"], num_classes)
            scene_shapes = _expected_shapes(config["scene"]["backbone"], [365])
        except ValueError as error:
            raise BundleError(f"{path}: {error}") from None
        for concept in config["concepts"]:
            _check_weight_shapes(path, config["networks"][concept], geo_shapes)
        _check_weight_shapes(path, config["scene"]["weights"], scene_shapes)
    return config


_extracted: list[tempfile.TemporaryDirectory] = []


def load_bundle(path: str | Path, *, device: str | torch.device = "cpu", verify: bool = True) -> GeoModel:
    """Load a bundle directory or archive onto `device`, checking it first (see `verify_bundle`)."""
    from .scenes import SceneMapping  # GEODATA's module; imported here so network/bundle tests stay light

    path = Path(path)
    if path.is_file() and is_archive(path):
        scratch = tempfile.TemporaryDirectory(prefix="geoweb-bundle-")
        _extracted.append(scratch)  # kept for the process's life: the model may be reloaded from it
        path = extract_archive(path, scratch.name)
    config = verify_bundle(path, check_weights=True) if verify else _read_config(path)
    if _is_geoclip(config):
        from .geoclip import load_geoclip_bundle
        return load_geoclip_bundle(path, config).to(device)
    arch = config["architecture"]
    num_classes = [int(n) for n in arch["num_classes"]]
    try:
        partitionings = []
        for entry in config["partitionings"]:
            partitioning = Partitioning.from_csv(path / entry["file"], name=entry["name"])
            if len(partitioning) != int(entry["cells"]):
                raise BundleError(f"{entry['file']}: {len(partitioning)} cells, config.json says {entry['cells']}")
            partitionings.append(partitioning)
        hierarchy = Hierarchy(partitionings)
        networks = {}
        for concept in config["concepts"]:
            network = GeoNetwork(arch["backbone"], num_classes)
            network.load_state_dict(load_file(str(path / config["networks"][concept])))
            networks[concept] = network
        scene_network = GeoNetwork(config["scene"]["backbone"], [365])
        scene_network.load_state_dict(load_file(str(path / config["scene"]["weights"])))
        mapping = SceneMapping.from_csv(path / config["scene"]["mapping"])
        isn = ISN(networks)
        scene = SceneClassifier(scene_network, mapping.labels, mapping.matrix)
        crops = CropSpec.from_config(config["input"])
    except BundleError:
        raise
    except (ValueError, RuntimeError, KeyError, OSError) as error:
        raise BundleError(f"{path}: cannot load bundle: {error}") from None
    card_path = path / config.get("model_card", MODEL_CARD)
    model = GeoModel(name=config["name"], untrained=bool(config.get("untrained", False)),
                     partitionings=partitionings, config=config, isn=isn, scene=scene, hierarchy=hierarchy,
                     crops=crops, model_card=card_path.read_text(encoding="utf-8"), path=path,
                     scene_mapping=mapping)
    return model.to(device)


def random_model(*, partitionings: list[Partitioning], backbone: str = "resnet50", scene_backbone: str = "resnet50",
                 routed: bool = True, name: str = "random", crops: CropSpec | None = None, seed: int = 0,
                 device: str | torch.device = "cpu") -> GeoModel:
    """An untrained GeoModel of real architecture, built in memory (benchmarks, tests of full-size shapes)."""
    from .scenes import SceneMapping

    torch.manual_seed(seed)
    sizes = [len(p) for p in partitionings]
    concepts = S3_CONCEPTS if routed else (BASE,)
    isn = ISN({c: GeoNetwork(backbone, sizes) for c in concepts})
    mapping = SceneMapping.load_default()
    scene = SceneClassifier(GeoNetwork(scene_backbone, [365]), mapping.labels, mapping.matrix)
    model = GeoModel(name=name, untrained=True, partitionings=list(partitionings),
                     config={"architecture": {"backbone": backbone, "num_classes": sizes,
                                              "routing": "isn-s3" if routed else "single"}},
                     isn=isn, scene=scene, hierarchy=Hierarchy(list(partitionings)), crops=crops or CropSpec(),
                     scene_mapping=mapping)
    return model.to(device)


# --- the tiny, untrained bundle -------------------------------------------------------------------------------------

# Places with many photos, so the tiny partitionings look like a (very coarse) photo distribution.
_TINY_CENTRES = ((48.86, 2.35), (51.51, -0.13), (41.39, 2.17), (40.71, -74.01), (37.77, -122.42), (35.68, 139.69),
                 (-33.87, 151.21), (-22.91, -43.17), (55.75, 37.62), (28.61, 77.21), (1.35, 103.82),
                 (30.04, 31.24), (-1.29, 36.82), (19.43, -99.13), (64.15, -21.94), (-54.8, -68.3))


def _tiny_partitionings(seed: int) -> list[Partitioning]:
    """Nested S2 partitionings at levels 3 / 4 / 5 from pseudo-random points around a few photo hot spots."""
    import s2sphere

    rng = np.random.default_rng(seed)
    centres = np.array(_TINY_CENTRES)
    pick = rng.integers(0, len(centres), size=400)
    lats = np.clip(centres[pick, 0] + rng.normal(0, 1.5, size=400), -89.0, 89.0)
    lons = (centres[pick, 1] + rng.normal(0, 2.5, size=400) + 180.0) % 360.0 - 180.0
    leaves = [s2sphere.CellId.from_lat_lng(s2sphere.LatLng.from_degrees(a, b)) for a, b in zip(lats, lons)]
    partitionings = []
    for name, level in (("coarse", 3), ("middle", 4), ("fine", 5)):
        groups: dict[str, list[int]] = {}
        for i, leaf in enumerate(leaves):
            groups.setdefault(leaf.parent(level).to_token(), []).append(i)
        tokens = sorted(groups)
        lat_mean, lon_mean = [], []
        for token in tokens:
            members = groups[token]
            lat_c, lon_c = float(lats[members].mean()), float(lons[members].mean())
            cell = s2sphere.CellId.from_token(token)
            if s2sphere.CellId.from_lat_lng(s2sphere.LatLng.from_degrees(lat_c, lon_c)).parent(level) != cell:
                centre = cell.to_lat_lng()  # a mean outside its cell would break the parent lookup
                lat_c, lon_c = centre.lat().degrees, centre.lng().degrees
            lat_mean.append(lat_c)
            lon_mean.append(lon_c)
        partitionings.append(Partitioning(name=name, tokens=tokens, counts=[len(groups[t]) for t in tokens],
                                          lat=lat_mean, lon=lon_mean, num_images=len(leaves)))
    return partitionings


def make_tiny_bundle(path: str | Path, *, seed: int = 0, name: str = "tiny-untrained") -> Path:
    """A small random-weight ISN bundle (tiny backbone, small nested partitionings), marked untrained.

    Builds in well under a second and predicts in a few milliseconds per photo on a CPU.
    """
    from .scenes import SceneMapping

    torch_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        partitionings = _tiny_partitionings(seed)
        sizes = [len(p) for p in partitionings]
        networks = {concept: GeoNetwork("tiny", sizes) for concept in S3_CONCEPTS}
        scene_network = GeoNetwork("tiny", [365])
    finally:
        torch.random.set_rng_state(torch_state)
    return save_bundle(
        path, name=name, networks=networks, partitionings=partitionings, scene_network=scene_network,
        scene_mapping=SceneMapping.load_default(), untrained=True, overwrite=True,
        model_card={"training_data": "none: random weights (seed %d)" % seed, "accuracy": "not measured: untrained",
                    "notes": "A demonstration bundle so the app runs without a trained model. Replace it with "
                             "`manage.py install_model`."})

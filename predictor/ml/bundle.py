"""Model bundles, the container: a directory (or a .tar/.tar.gz/.zip of one) holding everything needed to serve a
model, each file checksummed in its config.json. Which kind of model a bundle holds, and how it is read, belongs to
the kind's module and the registry (`predictor.ml.kinds`); nothing here knows any kind.

Every bundle has::

    config.json            format "geoweb-bundle", format_version 1, kind, name, untrained, created,
                           partitionings [{name, file, cells}], input (test-time crops), model_card,
                           files {relative path: sha256} of every other file; plus what its kind needs
    MODEL_CARD.md          training data, measured accuracy, the "untrained" flag
    partitionings/<name>.csv   the paper's cell CSV format, coarse -> fine

Weights are safetensors only; nothing in a bundle is ever unpickled. A bundle is written into a staging folder
beside its destination and moved into place in one rename (`BundleWriter`), so a reader never sees half of one.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tarfile
import tempfile
import uuid
import zipfile
from datetime import datetime, timezone
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .partitions import Partitioning, parent_matrix, partitioning_names
from .preprocess import CropSpec

FORMAT = "geoweb-bundle"
FORMAT_VERSION = 1
CONFIG = "config.json"
MODEL_CARD = "MODEL_CARD.md"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".zip")
# What every bundle's config.json holds, whatever its kind.
CONTAINER_KEYS = ("name", "partitionings", "input", "files")


class BundleError(Exception):
    """A bundle is missing, malformed, corrupted or does not match its own config."""


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise BundleError(f"bundle name {name!r}: use letters, digits, '.', '_' or '-' (at most 64 characters)")
    return name


def state_dict_shapes(module: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    """{tensor name: shape} of a module (build it under `torch.device("meta")` to allocate nothing)."""
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


# --- writing --------------------------------------------------------------------------------------------------------


class BundleWriter:
    """Writes one bundle: files go into a staging folder beside `path`; `finish(config)` adds the checksums and
    config.json and renames the folder into place. Leaving the `with` block without `finish` removes the staging
    folder, so a failed save leaves nothing behind and an existing bundle stays as it was.
    """

    def __init__(self, path: str | Path, *, name: str, overwrite: bool = False):
        self.name = check_name(name)
        self.path = Path(path)
        if self.path.exists() and not overwrite:
            raise BundleError(f"{self.path} already exists")
        self.overwrite = overwrite
        self.root = self.path.parent / f".{self.path.name}.partial-{uuid.uuid4().hex[:8]}"
        self._finished = False

    def __enter__(self) -> "BundleWriter":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.root.mkdir()
        return self

    def __exit__(self, *exc) -> None:
        if not self._finished:
            shutil.rmtree(self.root, ignore_errors=True)

    def file(self, rel: str) -> Path:
        """The staging path of `rel`, its folder created."""
        target = self.root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def save_tensors(self, rel: str, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> str:
        save_file({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}, str(self.file(rel)),
                  metadata=metadata)
        return rel

    def save_module(self, rel: str, module: torch.nn.Module, metadata: dict[str, str] | None = None) -> str:
        return self.save_tensors(rel, module.state_dict(), metadata)

    def write_text(self, rel: str, text: str) -> str:
        self.file(rel).write_text(text, encoding="utf-8")
        return rel

    def write_partitionings(self, partitionings: list[Partitioning], names: list[str] | None = None) -> list[dict]:
        """partitionings/<name>.csv, coarse -> fine; returns config.json's `partitionings` entries."""
        names = list(names or partitioning_names(partitionings))
        if len(names) != len(partitionings) or len(set(names)) != len(names):
            raise BundleError(f"partitioning names {names} must be unique, one per partitioning")
        if len(partitionings) > 1:
            try:
                parent_matrix(partitionings)
            except ValueError as error:
                raise BundleError(str(error)) from None
        return write_partitionings(self.root, names, partitionings)

    def finish(self, *, kind: str, untrained: bool, crops: CropSpec, partitionings: list[dict], card: str,
               **fields) -> Path:
        """Write MODEL_CARD.md and config.json (the common keys, then the kind's `fields`) and move the bundle into
        place. Returns its path."""
        self.write_text(MODEL_CARD, card)
        config = {"format": FORMAT, "format_version": FORMAT_VERSION, "kind": kind, "name": self.name,
                  "untrained": bool(untrained), "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                  **fields, "partitionings": partitionings, "input": crops.to_config(), "model_card": MODEL_CARD}
        config["files"] = {rel: file_sha256(self.root / rel) for rel in sorted(
            str(p.relative_to(self.root)) for p in self.root.rglob("*") if p.is_file() and p.name != CONFIG)}
        (self.root / CONFIG).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        retired = None
        if self.path.exists():
            if not self.overwrite:
                raise BundleError(f"{self.path} already exists")
            retired = self.path.parent / f".{self.path.name}.retired-{uuid.uuid4().hex[:8]}"
            os.replace(self.path, retired)
        os.replace(self.root, self.path)
        self._finished = True
        if retired is not None:
            shutil.rmtree(retired, ignore_errors=True)
        return self.path


def write_partitionings(path: Path, names: list[str], partitionings: list[Partitioning]) -> list[dict]:
    """Write each partitioning to partitionings/<name>.csv in a bundle; the config.json entries that list them."""
    entries = []
    for label, partitioning in zip(names, partitionings):
        rel = f"partitionings/{label}.csv"
        (path / rel).parent.mkdir(parents=True, exist_ok=True)
        partitioning.to_csv(path / rel)
        entries.append({"name": label, "file": rel, "cells": len(partitioning)})
    return entries


def model_card_text(name: str, *, untrained: bool, card: dict, config_input: dict, architecture: list[str],
                    untrained_note: str = "random weights. Its predictions are meaningless; it exists to exercise "
                                          "the app.",
                    sections: list[tuple[str, list[str]]] = ()) -> str:
    """MODEL_CARD.md of any kind: `architecture` lines from the kind, then the test-time crops, the training data,
    the measured accuracy, the kind's further `sections` (title, lines), the card's own sections and the notes.

    card: {"training_data": str, "accuracy": {dataset: {threshold_km: fraction}} or str, "notes": str,
    "sections": [(title, [lines])]}, all optional; "sections" comes from whoever measured the model (the training
    export's protocol, overlap, spread and untrained parts, predictor.ml.train.card).
    """
    lines = [f"# Model card: {name}", ""]
    if untrained:
        lines += [f"**UNTRAINED**: {untrained_note}", ""]
    lines += ["## Architecture", "", *architecture,
              f"- Test-time crops: {config_input['crops']}, aggregation {config_input['aggregation']}", "",
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
    # The kind's own sections, then the card's (predictor.ml.train.card: protocol, overlap, spread, untrained parts).
    for title, body in [*sections, *(card.get("sections") or ())]:
        lines += ["", f"## {title}", "", *body]
    if card.get("notes"):
        lines += ["", "## Notes", "", str(card["notes"])]
    return "\n".join(lines) + "\n"


# --- reading --------------------------------------------------------------------------------------------------------

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


_extracted: list[tempfile.TemporaryDirectory] = []


def bundle_directory(path: str | Path) -> Path:
    """A bundle directory as is; an archive unpacked into a folder kept for the process's life (a model may be
    reloaded from it)."""
    path = Path(path)
    if path.is_file() and is_archive(path):
        scratch = tempfile.TemporaryDirectory(prefix="geoweb-bundle-")
        _extracted.append(scratch)
        return extract_archive(path, scratch.name)
    return path


def read_config(path: Path) -> dict:
    """config.json of a bundle directory, with the container's keys checked (not the kind's)."""
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
    require_keys(config_path, config, CONTAINER_KEYS)
    if not isinstance(config["files"], dict) or not isinstance(config["partitionings"], list):
        raise BundleError(f"{config_path}: 'files' must map paths to checksums and 'partitionings' be a list")
    for entry in config["partitionings"]:
        if not (isinstance(entry, dict) and isinstance(entry.get("name"), str) and isinstance(entry.get("file"), str)
                and isinstance(entry.get("cells"), int)):
            raise BundleError(f"{config_path}: every 'partitionings' entry needs a name, a file and a cell count, "
                              f"not {entry!r}")
    if not isinstance(config["input"], dict):
        raise BundleError(f"{config_path}: 'input' must describe the test-time crops")
    return config


def check_heads(path: Path, config: dict, num_classes: list[int]) -> None:
    """The bundle's partitionings must have as many cells as its network has classes per head."""
    if [int(p["cells"]) for p in config["partitionings"]] != num_classes:
        raise BundleError(f"{path}: partitioning sizes {[p['cells'] for p in config['partitionings']]} do not "
                          f"match the heads {num_classes}")


def require_keys(where: Path | str, config: dict, keys) -> None:
    for key in keys:
        if key not in config:
            raise BundleError(f"{where}: missing key {key!r}")


def verify_files(path: Path, config: dict, referenced: list[str]) -> None:
    """Every file of `files` inside the bundle, present and matching its sha256; every `referenced` file (the
    partitionings, the model card and whatever the kind names) listed there."""
    files: dict = config["files"]
    common = [p["file"] for p in config["partitionings"]] + [config.get("model_card", MODEL_CARD)]
    for rel in common + list(referenced):
        if rel not in files:
            raise BundleError(f"{path}: {rel} is used by config.json but has no checksum in its 'files' list")
    for rel, digest in files.items():
        target = (path / rel).resolve()
        if not target.is_relative_to(path.resolve()):
            raise BundleError(f"{path}: file entry {rel!r} points outside the bundle")
        if not target.is_file():
            raise BundleError(f"{path}: missing file {rel}")
        actual = file_sha256(target)
        if actual != digest:
            raise BundleError(f"{path}: checksum mismatch for {rel} (config.json says {digest[:12]}..., "
                              f"the file is {actual[:12]}...): the file was changed or damaged")


def check_weight_shapes(path: Path, rel: str, expected: dict[str, tuple[int, ...]]) -> None:
    """The safetensors file `rel` holds exactly the `expected` tensor names and shapes (read from its header)."""
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


def read_partitionings(path: Path, config: dict) -> list[Partitioning]:
    """The bundle's partitionings, coarse -> fine, each checked against its cell count in config.json."""
    partitionings = []
    for entry in config["partitionings"]:
        partitioning = Partitioning.from_csv(path / entry["file"], name=entry["name"])
        if len(partitioning) != int(entry["cells"]):
            raise BundleError(f"{entry['file']}: {len(partitioning)} cells, config.json says {entry['cells']}")
        partitionings.append(partitioning)
    return partitionings


def read_model_card(path: Path, config: dict) -> str:
    return (path / config.get("model_card", MODEL_CARD)).read_text(encoding="utf-8")

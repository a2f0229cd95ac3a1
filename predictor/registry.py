"""Installed model bundles (settings.MODEL_DIR/<name>/) and which one is active.

The active model is settings.ACTIVE_MODEL when set, else the name in MODEL_DIR/ACTIVE. Installing checks the bundle
completely (files, checksums, weight shapes) in a staging folder first, so a bad bundle changes nothing.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from predictor.ml.bundle import CONFIG, NAME_PATTERN, BundleError, extract_archive, is_archive
from predictor.ml.kinds import verify_bundle

ACTIVE_FILE = "ACTIVE"
MAX_DOWNLOAD_BYTES = 8 * 1024 ** 3


@dataclass
class InstalledBundle:
    name: str
    path: Path
    untrained: bool
    active: bool
    config: dict


def model_dir() -> Path:
    return Path(settings.MODEL_DIR)


def _read_installed(path: Path, active_name: str | None) -> InstalledBundle | None:
    try:
        config = json.loads((path / CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return InstalledBundle(name=path.name, path=path, untrained=bool(config.get("untrained", False)),
                           active=path.name == active_name, config=config)


def installed_bundles() -> list[InstalledBundle]:
    """Every bundle directory under MODEL_DIR (sorted by name), with its untrained and active flags."""
    root = model_dir()
    if not root.is_dir():
        return []
    active = active_bundle_name()
    bundles = [_read_installed(p, active) for p in sorted(root.iterdir())
               if p.is_dir() and not p.name.startswith(".") and (p / CONFIG).is_file()]
    return [b for b in bundles if b is not None]


def active_bundle_name() -> str | None:
    if getattr(settings, "ACTIVE_MODEL", ""):
        return settings.ACTIVE_MODEL
    try:
        name = (model_dir() / ACTIVE_FILE).read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return name or None


def active_bundle_path() -> Path | None:
    """The active bundle's directory, or None when no model is active (or it is not installed)."""
    name = active_bundle_name()
    if not name or not NAME_PATTERN.match(name):
        return None
    path = model_dir() / name
    return path if (path / CONFIG).is_file() else None


def set_active(name: str) -> None:
    """Make an installed bundle the active one (MODEL_DIR/ACTIVE; settings.ACTIVE_MODEL still takes precedence)."""
    if not NAME_PATTERN.match(name or "") or not (model_dir() / name / CONFIG).is_file():
        installed = ", ".join(b.name for b in installed_bundles()) or "none"
        raise BundleError(f"no installed bundle named {name!r} (installed: {installed})")
    target = model_dir() / ACTIVE_FILE
    scratch = target.with_name(f".{ACTIVE_FILE}.{uuid.uuid4().hex}")
    scratch.write_text(name + "\n", encoding="utf-8")
    os.replace(scratch, target)  # atomic: readers see the old or the new name, never half of one


def install_bundle(src: str | Path, *, name: str | None = None, activate: bool = True,
                   replace: bool = False) -> InstalledBundle:
    """Install a bundle directory or archive into MODEL_DIR/<name> after checking it completely.

    On any problem a `BundleError` is raised and neither the installed bundles nor the active model change.
    """
    src = Path(src)
    root = model_dir()
    root.mkdir(parents=True, exist_ok=True)
    staging = root / f".incoming-{uuid.uuid4().hex}"
    try:
        if src.is_dir():
            shutil.copytree(src, staging, symlinks=False)
            bundle = staging
        elif src.is_file() and is_archive(src):
            bundle = extract_archive(src, staging)
        elif not src.exists():
            raise BundleError(f"{src}: no such file or directory")
        else:
            raise BundleError(f"{src}: not a bundle directory or a .tar/.tar.gz/.zip archive")
        config = verify_bundle(bundle)
        final_name = name or config["name"]
        if not NAME_PATTERN.match(final_name):
            raise BundleError(f"bundle name {final_name!r}: use letters, digits, '.', '_' or '-'")
        if final_name != config["name"]:
            # config.json is not among the checksummed files, so renaming keeps the bundle valid.
            config["name"] = final_name
            (bundle / CONFIG).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        target = root / final_name
        if target.exists() and not replace:
            raise BundleError(f"a bundle named {final_name!r} is already installed (install with --replace, "
                              "or choose another --name)")
        retired = None
        if target.exists():
            retired = root / f".retired-{uuid.uuid4().hex}"
            os.replace(target, retired)
        os.replace(bundle, target)
        if retired is not None:
            shutil.rmtree(retired, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if activate:
        set_active(final_name)
    active = active_bundle_name()
    return InstalledBundle(name=final_name, path=target, untrained=bool(config.get("untrained", False)),
                           active=active == final_name, config=config)


def download_bundle_archive(url: str, *, into: str | Path, max_bytes: int = MAX_DOWNLOAD_BYTES,
                            progress=None) -> Path:
    """Download a bundle archive (http/https) into a folder; only the explicit install command calls this."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme not in ("http", "https"):
        raise BundleError(f"{url}: only http(s) URLs can be downloaded")
    filename = Path(parsed.path).name
    if not is_archive(filename):
        raise BundleError(f"{url}: the URL must name a .tar, .tar.gz, .tgz or .zip bundle archive")
    target = Path(into) / filename
    try:
        with urllib.request.urlopen(url, timeout=60) as response, target.open("wb") as out:
            total = 0
            while block := response.read(1 << 20):
                total += len(block)
                if total > max_bytes:
                    raise BundleError(f"{url}: larger than {max_bytes:,} bytes, refused")
                out.write(block)
                if progress is not None:
                    progress(len(block))
    except OSError as error:
        raise BundleError(f"{url}: download failed ({error})") from None
    return target


def make_scratch_dir() -> tempfile.TemporaryDirectory:
    """A temporary folder next to MODEL_DIR (same filesystem, so installs are renames)."""
    model_dir().mkdir(parents=True, exist_ok=True)
    return tempfile.TemporaryDirectory(prefix=".download-", dir=model_dir())


def resolve_bundle(name_or_path: str | None) -> Path:
    """An installed bundle's name, a bundle directory or archive path, or None for the active bundle."""
    if not name_or_path:
        path = active_bundle_path()
        if path is None:
            raise BundleError("no active model: install one with `manage.py install_model` "
                              "(or `manage.py ensure_demo_model` for the untrained demo bundle)")
        return path
    if NAME_PATTERN.match(name_or_path) and (model_dir() / name_or_path / CONFIG).is_file():
        return model_dir() / name_or_path
    path = Path(name_or_path)
    if path.is_dir() or (path.is_file() and is_archive(path)):
        return path
    installed = ", ".join(b.name for b in installed_bundles()) or "none"
    raise BundleError(f"{name_or_path!r} is neither an installed bundle (installed: {installed}) nor a bundle path")

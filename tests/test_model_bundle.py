"""Bundles: save/load round trip, archives, refusals with clear messages; the registry keeps the active model."""
from __future__ import annotations

import json
import shutil
import tarfile
import time
import zipfile

import pytest
import torch
from safetensors.torch import load_file, save_file

from predictor import registry
from predictor.ml.bundle import BundleError
from predictor.ml.isn import make_tiny_bundle, save_model
from predictor.ml.kinds import load_bundle, verify_bundle


def _copy(src, tmp_path, name="copy"):
    return shutil.copytree(src, tmp_path / name)


def test_tiny_bundle_is_untrained_small_and_fast(tmp_path):
    start = time.perf_counter()
    path = make_tiny_bundle(tmp_path / "tiny", seed=3, name="tiny-test")
    assert time.perf_counter() - start < 2.0
    model = load_bundle(path)
    assert model.name == "tiny-test" and model.untrained is True
    assert [p.name for p in model.partitionings] == ["coarse", "middle", "fine"]
    sizes = [len(p) for p in model.partitionings]
    assert sizes == sorted(sizes) and sizes[0] >= 10
    assert model.isn.routed and model.config["architecture"]["backbone"] == "tiny"
    assert "UNTRAINED" in model.model_card
    assert not list(path.rglob("*.pt*")) and not list(path.rglob("*.pkl"))  # safetensors only


def test_round_trip_gives_identical_outputs(tiny_bundle, tmp_path):
    model = load_bundle(tiny_bundle)
    saved = save_model(tmp_path / "again", model, model_card={"training_data": "test", "accuracy": {
        "Im2GPS": {1: 0.1, 25: 0.3}}})
    again = load_bundle(saved)
    assert again.config["files"].keys() == model.config["files"].keys()
    assert [p.tokens for p in again.partitionings] == [p.tokens for p in model.partitionings]
    x = torch.randn(10, 3, 224, 224)
    scene = torch.randn(2, 3, 224, 224)
    first, second = model.infer(x, scene), again.infer(x, scene)
    assert torch.equal(first.concepts, second.concepts)
    assert all(torch.allclose(a, b) for a, b in zip(first.probabilities, second.probabilities))
    assert "Im2GPS: 1 km: 10.0%, 25 km: 30.0%" in again.model_card


def test_archives_load_like_directories(tiny_bundle, tmp_path):
    tar_path = tmp_path / "bundle.tar.gz"
    with tarfile.open(tar_path, "w:gz") as archive:
        archive.add(tiny_bundle, arcname="tiny")
    zip_path = tmp_path / "bundle.zip"
    with zipfile.ZipFile(zip_path, "w") as archive:
        for file in tiny_bundle.rglob("*"):
            archive.write(file, file.relative_to(tiny_bundle))
    assert load_bundle(tar_path).name == load_bundle(zip_path).name == "tiny-untrained"


def test_missing_file_is_refused(tiny_bundle, tmp_path):
    broken = _copy(tiny_bundle, tmp_path)
    (broken / "weights/geo_urban.safetensors").unlink()
    with pytest.raises(BundleError, match="missing file weights/geo_urban.safetensors"):
        load_bundle(broken)


def test_checksum_mismatch_is_refused(tiny_bundle, tmp_path):
    broken = _copy(tiny_bundle, tmp_path)
    csv_path = broken / "partitionings/fine.csv"
    csv_path.write_text(csv_path.read_text().replace(",", ";", 1))
    with pytest.raises(BundleError, match="checksum mismatch for partitionings/fine.csv"):
        verify_bundle(broken)


def test_weight_shape_mismatch_is_refused_even_with_matching_checksums(tiny_bundle, tmp_path):
    broken = _copy(tiny_bundle, tmp_path)
    rel = "weights/geo_natural.safetensors"
    state = load_file(str(broken / rel))
    state["heads.2.weight"] = torch.zeros(7, state["heads.2.weight"].shape[1])
    save_file(state, str(broken / rel))
    config = json.loads((broken / "config.json").read_text())
    import hashlib

    config["files"][rel] = hashlib.sha256((broken / rel).read_bytes()).hexdigest()
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(BundleError, match=r"geo_natural.safetensors: shape mismatch for heads.2.weight: file has \[7,"):
        load_bundle(broken)


def test_not_a_bundle_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(BundleError, match="missing config.json"):
        verify_bundle(tmp_path / "empty")
    (tmp_path / "empty/config.json").write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        verify_bundle(tmp_path / "empty")


def test_archive_with_path_traversal_is_refused(tmp_path):
    evil = tmp_path / "evil.tar"
    payload = tmp_path / "payload.txt"
    payload.write_text("x")
    with tarfile.open(evil, "w") as archive:
        archive.add(payload, arcname="../outside.txt")
    with pytest.raises(BundleError):
        load_bundle(evil)
    assert not (tmp_path.parent / "outside.txt").exists()


# --- registry (Django settings: MODEL_DIR is per test) ---------------------------------------------------------------

def test_install_activates_and_lists(tiny_bundle, settings):
    settings.ACTIVE_MODEL = ""
    assert registry.active_bundle_path() is None
    installed = registry.install_bundle(tiny_bundle)
    assert installed.active and registry.active_bundle_path() == settings.MODEL_DIR / "tiny-untrained"
    second = registry.install_bundle(tiny_bundle, name="second", activate=False)
    assert not second.active
    listing = {b.name: (b.active, b.untrained) for b in registry.installed_bundles()}
    assert listing == {"tiny-untrained": (True, True), "second": (False, True)}
    assert load_bundle(registry.active_bundle_path()).name == "tiny-untrained"
    assert load_bundle(settings.MODEL_DIR / "second").name == "second"  # the renamed copy still verifies
    registry.set_active("second")
    assert registry.active_bundle_name() == "second"
    settings.ACTIVE_MODEL = "tiny-untrained"  # the setting takes precedence over the ACTIVE file
    assert registry.active_bundle_path().name == "tiny-untrained"


def test_bad_bundle_leaves_the_active_model_unchanged(tiny_bundle, tmp_path, settings):
    settings.ACTIVE_MODEL = ""
    registry.install_bundle(tiny_bundle)
    broken = _copy(tiny_bundle, tmp_path, "broken")
    config = json.loads((broken / "config.json").read_text())
    config["name"] = "broken"
    (broken / "config.json").write_text(json.dumps(config))
    (broken / "MODEL_CARD.md").write_text("tampered")
    with pytest.raises(BundleError, match="checksum mismatch for MODEL_CARD.md"):
        registry.install_bundle(broken)
    assert registry.active_bundle_name() == "tiny-untrained"
    assert [b.name for b in registry.installed_bundles()] == ["tiny-untrained"]
    assert not [p for p in settings.MODEL_DIR.iterdir() if p.name.startswith(".incoming")]
    with pytest.raises(BundleError, match="already installed"):
        registry.install_bundle(tiny_bundle)
    with pytest.raises(BundleError, match="no installed bundle named 'nope'"):
        registry.set_active("nope")
    assert registry.active_bundle_name() == "tiny-untrained"

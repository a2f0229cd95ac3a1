"""`install_model geoclip --from DIR` (offline) and `evaluate --images DIR --model geoclip`."""
from __future__ import annotations

import io
import os

import numpy as np
import pytest
from django.core.management import CommandError, call_command
from safetensors.torch import load_file

from predictor import registry
from predictor.ml import evaluation
from predictor.ml.geoclip import TINY_VISION_CONFIG, GeoCLIPModel
from predictor.ml.kinds import load_bundle
from predictor.ml.partitions import tiny_partitionings
from tests.conftest import GEOCLIP_WHEEL as WHEEL
from tests.conftest import make_jpeg


@pytest.fixture(scope="module")
def clip_copy(tmp_path_factory):
    """A tiny CLIPModel saved like the Hugging Face repository (config.json + model.safetensors, text tower too)."""
    import torch
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(0)
    config = CLIPConfig(text_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, vocab_size=100),
                        vision_config=TINY_VISION_CONFIG, projection_dim=768)
    path = tmp_path_factory.mktemp("clip") / "clip-vit-large-patch14"
    CLIPModel(config).save_pretrained(path)
    return path


@pytest.fixture
def cells(tmp_path):
    paths = []
    for partitioning in tiny_partitionings(0):
        paths.append(tmp_path / f"{partitioning.name}.csv")
        partitioning.to_csv(paths[-1])
    return [str(p) for p in paths]


def _run(*args):
    out, err = io.StringIO(), io.StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_install_geoclip_from_a_local_clip_copy_and_evaluate(clip_copy, cells, settings, tmp_path, capsys):
    if not WHEEL.is_file():
        pytest.fail(f"GeoCLIP wheel not found at {WHEEL}: run `make geoclip-wheel`")
    settings.ACTIVE_MODEL = ""
    out, _ = _run("install_model", "geoclip", "--from", str(clip_copy), "--wheel", str(WHEEL),
                  "--partitionings", *cells, "--random-scene")
    assert "installed geoclip" in out and "(active)" in out
    path = registry.model_dir() / "geoclip"
    config = registry.installed_bundles()[0].config
    assert config["architecture"]["type"] == "geoclip" and config["architecture"]["gallery_size"] == 100_000
    assert {e["licence"].split()[0] for e in config["licences"]} == {"MIT"}
    assert "openai/clip-vit-large-patch14" in (path / "LICENSES.md").read_text()
    assert not list(path.rglob("*.bin")) and not list(path.rglob("*.pth"))
    # The vision tower in the bundle is the copy's, not a fresh random one.
    from safetensors.torch import load_file as load_copy
    original = load_copy(str(clip_copy / "model.safetensors"))
    stored = load_file(str(path / "weights/clip_vision.safetensors"))
    key = "vision_model.embeddings.patch_embedding.weight"
    assert (stored[key] == original[key]).all()
    model = load_bundle(path)
    assert isinstance(model, GeoCLIPModel) and not model.untrained
    # --random-scene: the trained GeoCLIP weights sit beside a random scene classifier, and everything says so.
    assert config["scene"]["untrained"] is True and model.scene_untrained
    assert "(shown, not used for routing); UNTRAINED (random weights): the scene shown for a photo means nothing" \
        in (path / "MODEL_CARD.md").read_text()

    images = tmp_path / "images"
    images.mkdir()
    meta = tmp_path / "meta.csv"
    meta.write_text("IMG_ID,AUTHOR,LAT,LON,S3_Label\na.jpg,x,48.85,2.35,0\nb.jpg,x,-33.9,151.2,1\n")
    (images / "a.jpg").write_bytes(make_jpeg(96, 64, (200, 30, 30)))
    (images / "b.jpg").write_bytes(make_jpeg(64, 96, (30, 200, 30)))
    _, err = _run("predict", str(images / "a.jpg"), "--model", "geoclip", "--device", "cpu")
    assert "model geoclip: the scene classifier is UNTRAINED (random weights), so the scene shown means nothing; " \
        "the geolocation networks are trained" in err
    call_command("evaluate", "--meta", str(meta), "--images", str(images), "--model", "geoclip",
                 "--batch-size", "2", "--out", str(tmp_path / "out"))
    captured = capsys.readouterr()
    assert captured.out.splitlines()[2].split()[:2] == ["all", "2"]
    written = evaluation.read_results(next((tmp_path / "out").glob("*_results.csv")))
    gallery = model.gallery.double().numpy()
    for lat, lon in zip(written.pred_lat, written.pred_lon):  # GeoCLIP answers with a gallery coordinate
        assert np.min(np.hypot(gallery[:, 0] - lat, gallery[:, 1] - lon)) < 1e-4


def test_install_geoclip_refuses_clearly_and_installs_nothing(clip_copy, cells, settings, tmp_path):
    settings.ACTIVE_MODEL = ""
    with pytest.raises(CommandError, match="--partitionings"):
        _run("install_model", "geoclip", "--from", str(clip_copy), "--wheel", str(WHEEL), "--random-scene")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CommandError, match="no config.json"):
        _run("install_model", "geoclip", "--from", str(empty), "--wheel", str(WHEEL), "--partitionings", *cells,
             "--random-scene")
    with pytest.raises(CommandError, match="no such file"):
        _run("install_model", "geoclip", "--from", str(clip_copy), "--wheel", str(tmp_path / "none.whl"),
             "--partitionings", *cells, "--random-scene")
    assert registry.installed_bundles() == []

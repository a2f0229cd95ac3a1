"""The model commands: install_model, models, ensure_demo_model, predict."""
from __future__ import annotations

import csv
import io
import json
import shutil

import pytest
from django.core.management import CommandError, call_command
from PIL import Image

from predictor import registry
from tests.conftest import make_jpeg


def _run(*args):
    out, err = io.StringIO(), io.StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


@pytest.fixture
def no_model_setting(settings):
    settings.ACTIVE_MODEL = ""
    return settings


def test_ensure_demo_model_installs_the_untrained_bundle_once(no_model_setting):
    out, _ = _run("ensure_demo_model")
    assert "UNTRAINED" in out and "tiny-untrained" in out
    assert registry.active_bundle_path().name == "tiny-untrained"
    out, _ = _run("ensure_demo_model")
    assert "active model: tiny-untrained (UNTRAINED" in out
    assert [b.name for b in registry.installed_bundles()] == ["tiny-untrained"]


def test_install_and_list_models(tiny_bundle, no_model_setting, tmp_path):
    out, _ = _run("install_model", str(tiny_bundle), "--name", "first")
    assert "installed first" in out and "UNTRAINED" in out
    _run("install_model", str(tiny_bundle), "--name", "second", "--no-activate")
    out, _ = _run("models")
    lines = out.splitlines()
    assert lines[0].startswith("* first") and "UNTRAINED" in lines[0]
    assert lines[1].startswith("  second")
    out, _ = _run("models", "--activate", "second")
    assert out.splitlines()[-1].startswith("* second")


def test_install_refuses_a_damaged_bundle_and_keeps_the_active_one(tiny_bundle, no_model_setting, tmp_path):
    _run("install_model", str(tiny_bundle))
    damaged = shutil.copytree(tiny_bundle, tmp_path / "damaged")
    (damaged / "weights/scene.safetensors").unlink()
    with pytest.raises(CommandError, match="bundle refused: .*missing file weights/scene.safetensors"):
        _run("install_model", str(damaged), "--name", "damaged")
    assert registry.active_bundle_name() == "tiny-untrained"
    with pytest.raises(CommandError, match="only http"):
        _run("install_model", "ftp://example.org/bundle.tar")


def test_predict_reports_each_photo_and_writes_csv_json_and_cams(tiny_bundle, no_model_setting, tmp_path):
    _run("install_model", str(tiny_bundle))
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "a.jpg").write_bytes(make_jpeg(120, 90))
    Image.new("RGB", (64, 64), (0, 120, 10)).save(photos / "b.png")
    (photos / "broken.jpg").write_bytes(b"not a photo at all")
    out_csv = tmp_path / "results.csv"
    out, err = _run("predict", str(photos), "--device", "cpu", "--out", str(out_csv), "--cam", str(tmp_path / "cams"),
                    "--top-k", "3")
    assert "UNTRAINED" in err
    assert "broken.jpg: ERROR not a supported image" in err
    assert "a.jpg:" in out and "confidence" in out and "2 predicted, 1 failed" in out
    rows = {r["image"].rsplit("/", 1)[-1]: r for r in csv.DictReader(out_csv.open())}
    assert rows["broken.jpg"]["error"] and not rows["a.jpg"]["error"]
    a = rows["a.jpg"]
    assert a["scene"] in ("indoor", "natural", "urban")
    assert sum(float(a[f"p_{c}"]) for c in ("indoor", "natural", "urban")) == pytest.approx(1.0, abs=1e-3)
    for name in ("coarse", "middle", "fine", "hierarchy"):
        assert -90 <= float(a[f"{name}_lat"]) <= 90 and -180 <= float(a[f"{name}_lon"]) <= 180
    top = json.loads(a["top_cells"])
    assert len(top) == 3 and [float(top[0][2]), float(top[0][3])] == pytest.approx(
        [float(a["hierarchy_lat"]), float(a["hierarchy_lon"])], abs=1e-5)
    assert 0 < float(a["confidence"]) <= 1
    cams = sorted(p.name for p in (tmp_path / "cams").iterdir())
    assert cams == ["a_cam.png", "b_cam.png"]
    assert Image.open(tmp_path / "cams/a_cam.png").size == (120, 90)

    out_json = tmp_path / "results.json"
    _run("predict", str(photos / "a.jpg"), "--device", "cpu", "--out", str(out_json), "--model", "tiny-untrained")
    record = json.loads(out_json.read_text())[0]
    assert record["model_name"] == "tiny-untrained" and record["untrained"] is True
    assert set(record["top_cells"]) == {"coarse", "middle", "fine", "hierarchy"}


def test_predict_without_a_model_says_how_to_get_one(no_model_setting, tmp_path):
    (tmp_path / "a.jpg").write_bytes(make_jpeg())
    with pytest.raises(CommandError, match="no active model: install one"):
        _run("predict", str(tmp_path / "a.jpg"))
    with pytest.raises(CommandError, match="neither an installed bundle"):
        _run("predict", str(tmp_path / "a.jpg"), "--model", "missing")

"""Model kinds by registry: a kind defined only in the tests (tests/colour_kind.py) and registered with one line is
checked, installed, served by the engine and analysed as an upload, with its optional capabilities (attention maps,
refinement) and without the ones it lacks; unknown kinds are refused clearly; bundles from before kinds existed
load as before."""
from __future__ import annotations

import io
import json
import shutil

import numpy as np
import pytest
import torch
from django.core.management import CommandError, call_command
from django.test import Client
from PIL import Image

from predictor import inference, registry, services, worker
from predictor.ml import kinds
from predictor.ml.bundle import BundleError
from predictor.ml.engine import InferenceEngine
from predictor.ml.geoclip import GeoCLIPModel
from predictor.ml.isn import ISNModel
from predictor.ml.model import (ActivationMaps, AttentionMaps, GeoModel, MissingCapability, RetrievalRefinement,
                                SceneCategories, offers)
from predictor.ml.partitions import tiny_partitionings
from predictor.ml.prediction import ATTENTION_MAP, HIERARCHY
from predictor.models import Analysis
from tests import colour_kind
from tests.conftest import make_jpeg

RED, BLUE = 0, 1  # the fine cells whose reference colours are pure red and pure blue


@pytest.fixture
def colour_kind_registered():
    kinds.register_kind(colour_kind.KIND_SPEC)  # the one registration line a new kind needs
    yield
    kinds.unregister_kind(colour_kind.KIND)


@pytest.fixture
def colour_bundle(tmp_path):
    partitionings = tiny_partitionings(0)
    fine = partitionings[-1]
    greys = torch.linspace(0.3, 0.7, len(fine))
    colours = torch.stack([greys, greys, greys], dim=1)
    colours[RED], colours[BLUE] = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 0.0, 1.0])
    # Background photos around the red cell's mean coordinate (four within a few km, one 40 km off); none in the blue
    # cell.
    offsets = [(0.01, 0.01), (0.02, 0.01), (-0.01, 0.02), (0.01, -0.02), (0.3, 0.3)]
    background = [(float(fine.lat[RED]) + a, float(fine.lon[RED]) + b, RED) for a, b in offsets]
    return colour_kind.save_colour_bundle(tmp_path / "colour", name="colour-test", partitionings=partitionings,
                                          colours=colours, background=background)


def _photo(colour, size=(320, 240)) -> Image.Image:
    return Image.new("RGB", size, colour)


def test_a_kind_registered_with_one_line_is_served_by_the_unchanged_engine(colour_kind_registered, colour_bundle):
    config = kinds.verify_bundle(colour_bundle)
    assert config["kind"] == "colour-test"
    model = kinds.load_bundle(colour_bundle)
    assert isinstance(model, colour_kind.ColourModel) and isinstance(model, GeoModel)
    assert offers(model, AttentionMaps) and offers(model, RetrievalRefinement)
    assert not offers(model, ActivationMaps) and not offers(model, SceneCategories)
    fine = model.partitionings[-1]
    half = _photo((0, 0, 0))
    half.paste((255, 255, 255), (0, 0, 160, 240))  # bright left half
    with InferenceEngine(model, max_batch_size=4, max_wait_ms=20) as engine:
        red, blue, bright = engine.predict_many([_photo((255, 0, 0)), _photo((0, 0, 255)), half], cam=True)
        with pytest.raises(MissingCapability, match="no per-cell activation maps"):
            engine.submit(_photo((255, 0, 0)), cam_cells=3)
    # The colour picks the cell; the red cell has background photos, so the answer is refined to their medoid.
    assert red.top_cells[HIERARCHY][0].class_index == RED and red.top_cells["fine"][0].probability > 0.99
    assert red.argmax[HIERARCHY] == (fine.lat[RED], fine.lon[RED])
    assert red.refined is not None and red.refined.localizable and "5 background photos" in red.refined.note
    assert (red.lat, red.lon) == (red.refined.lat, red.refined.lon) != red.argmax[HIERARCHY]
    # The blue cell has none: the f* cell's mean coordinate stands.
    assert blue.top_cells[HIERARCHY][0].class_index == BLUE
    assert blue.refined is None and (blue.lat, blue.lon) == (fine.lat[BLUE], fine.lon[BLUE])
    # Attention maps, not activation maps: one map of the photo, brighter where the photo is bright.
    assert bright.cam_kind == ATTENTION_MAP and bright.cell_cams == {}
    assert bright.cam.shape == (256, 341)  # the resized photo (shorter side 256)
    assert bright.cam[:, :150].mean() > 0.9 and bright.cam[:, 190:].mean() < 0.1
    assert red.scene.concept == "urban" and red.scene.places365_top == []  # it names no scene categories
    # Maps the model computed over the whole photo reach the prediction, one per photo.
    assert red.overlays["red"].shape == (224, 224) and red.overlays["red"].all() and not blue.overlays["red"].any()
    json.dumps(red.to_dict())


def test_a_new_kind_uses_the_compiled_padded_path_unchanged(colour_kind_registered, colour_bundle):
    model = kinds.load_bundle(colour_bundle)
    photos = [_photo((255, 0, 0)), _photo((0, 0, 255)), _photo((90, 90, 90))]
    with InferenceEngine(model, max_batch_size=4, max_wait_ms=20, batch_buckets=(1, 2)) as engine:
        plain = engine.predict_batch(photos)
        calls = []
        engine._compiled = {id(n): (lambda x, n=n: (calls.append(x.shape[0]), n(x))[1]) for n in engine._networks()}
        padded = engine.predict_batch(photos)
    assert set(calls) <= {5, 10}  # buckets of 1 and 2 photos, five crops each
    assert [(p.lat, p.lon) for p in plain] == [(p.lat, p.lon) for p in padded]


def test_an_unknown_kind_is_refused_and_changes_nothing(colour_bundle, tiny_bundle, settings):
    settings.ACTIVE_MODEL = ""
    registry.install_bundle(tiny_bundle)
    with pytest.raises(BundleError,
                       match="cannot read bundles of kind 'colour-test' .it knows: geoclip, isn, swc, vit"):
        kinds.load_bundle(colour_bundle)
    with pytest.raises(BundleError, match="kind 'colour-test'"):
        registry.install_bundle(colour_bundle)
    assert registry.active_bundle_name() == "tiny-untrained"
    assert [b.name for b in registry.installed_bundles()] == ["tiny-untrained"]


def _without_kind(bundle, tmp_path, name):
    """The same bundle as written before kinds existed: no "kind" key (config.json itself is not checksummed)."""
    copy = shutil.copytree(bundle, tmp_path / name)
    config = json.loads((copy / "config.json").read_text())
    del config["kind"]
    (copy / "config.json").write_text(json.dumps(config))
    return copy


def test_bundles_from_before_kinds_load_as_their_kind(tiny_bundle, tiny_geoclip, tmp_path):
    assert isinstance(kinds.load_bundle(_without_kind(tiny_bundle, tmp_path, "isn")), ISNModel)
    assert isinstance(kinds.load_bundle(_without_kind(tiny_geoclip, tmp_path, "geoclip")), GeoCLIPModel)


def test_a_failed_save_leaves_no_half_bundle(tmp_path):
    partitionings = tiny_partitionings(0)
    with pytest.raises(BundleError, match="128 fine cells need 128 colours"):
        colour_kind.save_colour_bundle(tmp_path / "bad", name="bad", partitionings=partitionings,
                                       colours=torch.zeros(3, 3), background=[])
    assert list(tmp_path.iterdir()) == []
    good = colour_kind.save_colour_bundle(tmp_path / "good", name="good", partitionings=partitionings,
                                          colours=torch.rand(128, 3), background=[])
    before = (good / "config.json").read_text()
    with pytest.raises(BundleError, match="already exists"):
        colour_kind.save_colour_bundle(good, name="good", partitionings=partitionings, colours=torch.rand(128, 3),
                                       background=[])
    assert (good / "config.json").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good"]  # no staging folder left behind


# --- commands ------------------------------------------------------------------------------------------------------

def _run(*args) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_commands_use_what_a_kind_offers(colour_kind_registered, colour_bundle, tiny_geoclip, tmp_path, settings):
    settings.ACTIVE_MODEL = ""
    photo = tmp_path / "red.jpg"
    photo.write_bytes(make_jpeg(120, 90, colour=(255, 0, 0)))
    # Attention maps are maps: `predict --cam` writes them for this kind ...
    _run("predict", str(photo), "--device", "cpu", "--model", str(colour_bundle), "--cam", str(tmp_path / "cams"))
    assert Image.open(tmp_path / "cams/red_cam.png").size == (120, 90)
    # ... and says so, writing nothing, for a kind without maps.
    _, err = _run("predict", str(photo), "--device", "cpu", "--model", str(tiny_geoclip), "--cam",
                  str(tmp_path / "none"))
    assert "geoclip-tiny (kind geoclip) gives no activation maps" in err and not (tmp_path / "none").exists()
    # Scenes are labelled only with a bundle that has a Places365 classifier.
    with pytest.raises(CommandError, match="colour-test .kind colour-test. has no Places365 scene classifier"):
        _run("label_scenes", "--shards", str(tmp_path), "--model", str(colour_bundle), "--output",
             str(tmp_path / "labels.csv"))
    registry.install_bundle(colour_bundle)
    out, _ = _run("models")
    assert "* colour-test  colour-test: mean colour -> cell UNTRAINED" in out
    kinds.unregister_kind(colour_kind.KIND)
    out, _ = _run("models")  # an installed bundle of a kind this GeoWeb no longer knows is listed, not hidden
    assert "colour-test  kind 'colour-test', which this GeoWeb cannot load" in out


# --- end to end: an upload analysed by the test kind -------------------------------------------------------------

@pytest.fixture
def active_colour_model(colour_kind_registered, colour_bundle, settings):
    settings.EMBEDDED_WORKER = False
    worker.stop_embedded_worker()
    registry.install_bundle(colour_bundle)
    inference.reset_engine()
    yield
    inference.reset_engine()


@pytest.mark.django_db
@pytest.mark.parametrize("level", ["fine", "region"])
def test_an_upload_is_analysed_by_the_test_kind(active_colour_model, user, settings, level):
    settings.UPLOAD_GRANULARITY = level
    analysis = services.create_analysis(owner=user, data=make_jpeg(320, 240, colour=(255, 0, 0)))
    assert worker.Worker(worker_id="w").run_once() == 1
    analysis = Analysis.objects.get(pk=analysis.pk)
    assert analysis.status == "done", analysis.error_message
    assert analysis.model_name == "colour-test" and analysis.untrained
    events = {e["type"]: e for e in analysis.events}
    # A refining kind adds the `refined` event (its score and verdict; the point only at fine level).
    assert list(events) == ["scene", "partitions", "heatmap", "estimate", "refined", "cam", "done"]
    assert events["scene"]["concept"] == "urban" and events["scene"]["places365"] == []
    assert events["refined"]["localizable"] is True and events["refined"]["density"] == 0.5  # 5 photos / 10
    fine = inference.get_model().partitionings[-1]
    if level == "fine":  # the refined answer, a background photo's position near the red cell's mean
        red = (float(fine.lat[RED]), float(fine.lon[RED]))
        assert (events["estimate"]["lat"], events["estimate"]["lon"]) != (round(red[0], 5), round(red[1], 5))
        assert abs(events["estimate"]["lat"] - red[0]) < 0.05 and abs(events["estimate"]["lon"] - red[1]) < 0.05
        assert (events["refined"]["lat"], events["refined"]["lon"]) == (events["estimate"]["lat"],
                                                                        events["estimate"]["lon"])
    else:
        assert events["refined"]["lat"] is None and "5 background photos" not in json.dumps(analysis.events)
    # Where the model looked: one attention map at every level, and no per-cell maps, which it does not have.
    cam = events["cam"]
    assert cam["url"] and cam["caption"] == "the model's attention, the same for every cell" and cam["cells"] == {}
    client = Client()
    client.force_login(user)
    response = client.get(cam["url"])
    assert response.status_code == 200 and response["Content-Type"] == "image/png"
    overlay = Image.open(io.BytesIO(b"".join(response.streaming_content)))
    assert overlay.size == (320, 240) and np.asarray(overlay).std() > 0


@pytest.mark.parametrize("damage", [
    lambda c: c.update(kind=["isn"]),
    lambda c: c.update(kind="../../etc"),
    lambda c: c["partitionings"][0].pop("file"),
    lambda c: c["partitionings"].__setitem__(0, "coarse.csv"),
    lambda c: c.update(partitionings={}),
    lambda c: c.update(files=[]),
    lambda c: c.pop("architecture"),
    lambda c: c["networks"].pop("urban"),
    lambda c: c["architecture"].update(num_classes="35"),
    lambda c: c["scene"].pop("weights"),
    lambda c: c.update(input="five"),
], ids=["kind-list", "kind-path", "no-file", "entry-string", "partitionings-dict", "files-list", "no-architecture",
        "no-network", "num-classes-string", "no-scene-weights", "input-string"])
def test_a_hostile_config_is_refused_with_a_bundle_error(tiny_bundle, tmp_path, damage):
    copy = shutil.copytree(tiny_bundle, tmp_path / "hostile")
    config = json.loads((copy / "config.json").read_text())
    damage(config)
    (copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(BundleError):
        kinds.load_bundle(copy)


@pytest.mark.parametrize("damage", [
    lambda c: c["architecture"].update(num_classes=["x"]),
    lambda c: c["architecture"].update(files="weights"),
    lambda c: c["architecture"]["files"].pop("gallery"),
    lambda c: c.update(scene=None),
], ids=["num-classes", "files-string", "no-gallery", "scene-none"])
def test_a_hostile_geoclip_config_is_refused_with_a_bundle_error(tiny_geoclip, tmp_path, damage):
    copy = shutil.copytree(tiny_geoclip, tmp_path / "hostile")
    config = json.loads((copy / "config.json").read_text())
    damage(config)
    (copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(BundleError):
        kinds.verify_bundle(copy)

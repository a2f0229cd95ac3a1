"""The "vit" model kind: a bundle of one multi-task ViT (+ its segmentation network) registered with one line, served
by the unchanged engine: its own scene head names the scene, attention rollout is the "where it looked" map and
the segmentation comes back as an overlay."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from predictor.ml import kinds
from predictor.ml.bundle import BundleError
from predictor.ml.engine import InferenceEngine
from predictor.ml.model import ActivationMaps, AttentionMaps, GeoModel, PlacesSceneClassifier, SceneCategories, offers
from predictor.ml.prediction import ATTENTION_MAP, HIERARCHY
from predictor.ml.vit import SEGMENTATION_OVERLAY, ViTModel, make_tiny_vit_bundle


@pytest.fixture(scope="module")
def vit_bundle(tmp_path_factory):
    return make_tiny_vit_bundle(tmp_path_factory.mktemp("vit") / "tiny-vit")


def _photo(seed: int, size=(320, 240)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


def test_vit_bundle_is_safetensors_with_a_card_naming_backbone_inputs_and_scene(vit_bundle):
    config = kinds.verify_bundle(vit_bundle)
    assert config["kind"] == "vit"
    files = sorted(config["files"])
    assert "weights/vit.safetensors" in files and "weights/segmentation.safetensors" in files
    assert not [f for f in files if f.endswith((".pt", ".pth", ".bin", ".pkl"))]
    card = (vit_bundle / "MODEL_CARD.md").read_text()
    assert "vit_tiny" in card and "segmentation map from tiny" in card and "scene head of 3 classes" in card
    assert "Training data" in card and "UNTRAINED" in card
    assert "vit_tiny multi-task ViT (RGB+segmentation)" in kinds.kind_of(config).summary(config)


def test_a_damaged_vit_bundle_is_refused(vit_bundle, tmp_path):
    import shutil
    copy = shutil.copytree(vit_bundle, tmp_path / "copy")
    config = json.loads((copy / "config.json").read_text())
    config["architecture"]["scene_classes"] = 16
    (copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(BundleError, match="3 scene labels for a scene head of 16"):
        kinds.verify_bundle(copy)
    config["architecture"]["scene_classes"] = 3
    config["architecture"]["seg_channels"] = 0
    (copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(BundleError, match="seg_channels 0 and the segmentation entry disagree"):
        kinds.verify_bundle(copy)


def test_engine_serves_scene_attention_map_and_segmentation(vit_bundle):
    model = kinds.load_bundle(vit_bundle)
    assert isinstance(model, ViTModel) and isinstance(model, GeoModel)
    assert offers(model, AttentionMaps) and offers(model, SceneCategories)
    assert not offers(model, ActivationMaps) and not offers(model, PlacesSceneClassifier)
    with InferenceEngine(model, max_batch_size=4, max_wait_ms=20) as engine:
        first, second = engine.predict_many([_photo(1), _photo(2, (200, 300))], cam=True)
    for prediction in (first, second):
        assert prediction.cam_kind == ATTENTION_MAP and prediction.cam is not None
        assert 0.0 <= float(prediction.cam.min()) and float(prediction.cam.max()) <= 1.0 + 1e-6
        assert float(prediction.cam.max()) > float(prediction.cam.min())
        # The scene comes from the ViT's own 3-way head: its categories are the S3 concepts and agree with s3.
        labels = [label for label, _ in prediction.scene.places365_top]
        assert set(labels) == {"indoor", "natural", "urban"}
        assert labels[0] == prediction.scene.concept
        overlay = prediction.overlays[SEGMENTATION_OVERLAY]
        assert overlay.shape == (224, 224) and overlay.max() < 21
        assert prediction.top_cells[HIERARCHY]
    assert first.cam.shape == (256, 341) and second.cam.shape == (384, 256)  # the resized photos


def test_vit_uses_the_compiled_padded_path_unchanged(vit_bundle):
    model = kinds.load_bundle(vit_bundle)
    photos = [_photo(3), _photo(4), _photo(5)]
    with InferenceEngine(model, max_batch_size=4, max_wait_ms=20, batch_buckets=(1, 2)) as engine:
        plain = engine.predict_batch(photos)
        calls = []
        engine._compiled = {id(n): (lambda x, n=n: (calls.append(x.shape[0]), n(x))[1]) for n in engine._networks()}
        padded = engine.predict_batch(photos)
    assert set(calls) <= {1, 2, 5, 10} and {5, 10} & set(calls) and {1, 2} & set(calls)
    for a, b in zip(plain, padded):
        assert (a.lat, a.lon) == pytest.approx((b.lat, b.lon))
        assert np.array_equal(a.overlays[SEGMENTATION_OVERLAY], b.overlays[SEGMENTATION_OVERLAY])


def test_an_rgb_only_vit_bundle_has_no_segmentation(tmp_path):
    path = make_tiny_vit_bundle(tmp_path / "rgb", segmentation=False)
    model = kinds.load_bundle(path)
    with InferenceEngine(model, max_batch_size=2, max_wait_ms=5) as engine:
        [prediction] = engine.predict_many([_photo(6)], cam=True)
    assert prediction.overlays == {} and prediction.cam is not None

"""The GeoCLIP model kind: the geoclip wheel's real location encoder, image MLP and gallery with a tiny random CLIP
tower.

The wheel is read, never installed (fixtures `geoclip_wheel` and `tiny_geoclip` in conftest).
"""
from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from predictor.ml.bundle import BundleError
from predictor.ml.engine import InferenceEngine
from predictor.ml.geoclip import (GALLERY, GeoCLIPModel, LocationEncoder, assign_gallery, equal_earth,
                                  make_tiny_geoclip_bundle, read_wheel)
from predictor.ml.kinds import load_bundle, verify_bundle
from predictor.ml.model import ActivationMaps, MissingCapability, SceneCategories, offers
from predictor.ml.partitions import Partitioning
from predictor.ml.prediction import HIERARCHY


@pytest.fixture(scope="session")
def release(geoclip_wheel):
    return read_wheel(geoclip_wheel)


def _photo(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8))
    out = io.BytesIO()
    image.save(out, format="JPEG")
    return out.getvalue()


def test_wheel_location_encoder_loads_with_exactly_its_keys(release):
    encoder = LocationEncoder.from_state_dict(release.location)
    assert set(encoder.state_dict()) == set(release.location)
    assert encoder.branches == 3
    assert len(release.gallery_lat) == 100_000
    with torch.no_grad():
        embeddings = encoder(torch.tensor([[48.8566, 2.3522], [48.86, 2.35], [-33.87, 151.21]]))
    assert embeddings.shape == (3, 512)
    unit = torch.nn.functional.normalize(embeddings, dim=1)
    # Trained weights: Paris is nearer Paris (500 m away) than Sydney in embedding space.
    assert float(unit[0] @ unit[1]) > float(unit[0] @ unit[2]) + 0.1


def test_equal_earth_projection_known_points():
    xy = equal_earth(torch.tensor([[0.0, 0.0], [0.0, 180.0], [90.0, 0.0]]))
    assert torch.allclose(xy[0], torch.zeros(2), atol=1e-6)
    assert float(xy[1, 0]) > 0 and abs(float(xy[1, 1])) < 1e-6
    assert float(xy[2, 1]) > 0 and abs(float(xy[2, 0])) < 1e-6


def test_wheel_without_weights_is_refused_clearly(tmp_path):
    bad = tmp_path / "geoclip-1.3.0-py3-none-any.whl"
    with zipfile.ZipFile(bad, "w") as handle:
        handle.writestr("geoclip/__init__.py", "")
    with pytest.raises(ValueError, match="location_encoder_weights.pth"):
        read_wheel(bad)


def test_gallery_points_outside_every_cell_go_to_the_nearest():
    part = Partitioning(name="fine", tokens=["47", "89"], counts=[1, 1], lat=[48.0, 40.0], lon=[2.0, -74.0])
    out = assign_gallery(np.array([48.5, -33.9]), np.array([2.3, 151.2]), [part])
    assert out[0, 0] == part.class_of(48.5, 2.3)
    assert out[1, 0] in (0, 1)  # Sydney is in neither cell: its mass still lands on one


def test_bundle_verifies_and_loads_as_geoclip(tiny_geoclip):
    config = verify_bundle(tiny_geoclip)
    assert config["architecture"]["type"] == "geoclip"
    assert {e["licence"] for e in config["licences"]} >= {"MIT"}
    assert "MIT" in (tiny_geoclip / "LICENSES.md").read_text()
    model = load_bundle(tiny_geoclip)
    assert isinstance(model, GeoCLIPModel) and model.untrained
    assert model.partitioning_names == ["coarse", "middle", "fine"]
    assert model.gallery.shape == (500, 2)


def test_damaged_geoclip_weights_are_refused(tiny_geoclip, tmp_path):
    import shutil
    copy = tmp_path / "copy"
    shutil.copytree(tiny_geoclip, copy)
    with (copy / "weights/geoclip_location.safetensors").open("r+b") as handle:
        handle.seek(200)
        handle.write(b"\0\0\0\0")
    with pytest.raises(BundleError, match="checksum mismatch"):
        verify_bundle(copy)


def test_predictions_have_the_isn_shape_with_mass_conserved(tiny_geoclip):
    model = load_bundle(tiny_geoclip)
    with InferenceEngine(model, device="cpu", max_batch_size=4, top_k=5) as engine:
        crops = torch.randn(3, 3, 224, 224)
        output = model.infer(crops, torch.randn(3, 3, 224, 224))
        for level, probabilities in enumerate(output.probabilities):
            assert probabilities.shape == (3, len(model.partitionings[level]))
            assert torch.allclose(probabilities.sum(dim=1), torch.ones(3), atol=1e-4)
        gallery = model.gallery_probabilities(model.tower(crops)[0])
        # Each cell holds exactly the mass of its gallery points.
        fine = model.assignment[:, 2]
        cell = int(fine[0])
        assert torch.allclose(output.probabilities[2][:, cell], gallery[:, fine == cell].sum(dim=1), atol=1e-6)
        # A CLIP vision transformer has no class activation maps: asking for them is refused, not answered empty.
        assert not engine.offers_maps and not offers(model, ActivationMaps) and offers(model, SceneCategories)
        with pytest.raises(MissingCapability, match="geoclip-tiny .kind geoclip. gives no activation"):
            engine.predict_many([_photo(1)], cam=True)
        with pytest.raises(MissingCapability, match="no per-cell activation maps"):
            engine.predict_batch([_photo(1)], cam_cells=[3])
        results = engine.predict_many([_photo(1), _photo(2), b"not an image"])
    assert isinstance(results[2], Exception)
    for prediction in results[:2]:
        assert set(prediction.top_cells) == {"coarse", "middle", "fine", HIERARCHY}
        for cells in prediction.top_cells.values():
            probabilities = [c.probability for c in cells]
            assert len(cells) == 5 and probabilities == sorted(probabilities, reverse=True)
        assert (prediction.lat, prediction.lon) == prediction.argmax[GALLERY]
        assert [prediction.lat, prediction.lon] in model.gallery.tolist()
        assert 0.0 < prediction.confidence <= 1.0
        assert prediction.cam is None and prediction.cam_kind is None
        assert len(prediction.scene.places365_top) == 5  # the bundle's Places365 classifier names the scene
        json.dumps(prediction.to_dict())


def test_confidence_is_the_gallery_mass_within_25_km(tiny_geoclip):
    model = load_bundle(tiny_geoclip)
    with InferenceEngine(model, device="cpu") as engine:
        prediction = engine.predict_many([_photo(3)])[0]
    crops, scene = _inputs(engine, _photo(3))
    gallery = model.gallery_probabilities(model.tower(crops)[0])[0].numpy()
    lat, lon = np.radians(model.gallery[:, 0].numpy()), np.radians(model.gallery[:, 1].numpy())
    la, lo = np.radians(prediction.lat), np.radians(prediction.lon)
    h = np.sin((lat - la) / 2) ** 2 + np.cos(la) * np.cos(lat) * np.sin((lon - lo) / 2) ** 2
    near = 2 * 6371.0088 * np.arcsin(np.sqrt(h)) <= 25
    assert prediction.confidence == pytest.approx(float(gallery[near].sum()), rel=1e-3)
    assert gallery[near].sum() >= gallery.max()


def _inputs(engine, blob):
    prepared = engine._prepare_on_cpu(blob)
    return prepared.crops, prepared.scene[None]


def test_geoclip_bundle_with_the_papers_partitionings(shared_data, geoclip_wheel, tmp_path):
    cells = shared_data / "geoestimation"
    partitionings = [Partitioning.from_csv(cells / f"cells_50_{n}.csv", name=name)
                     for n, name in ((5000, "coarse"), (2000, "middle"), (1000, "fine"))]
    path = make_tiny_geoclip_bundle(tmp_path / "g", wheel=geoclip_wheel, partitionings=partitionings,
                                    gallery_every=1000)
    model = load_bundle(path)
    assert [len(p) for p in model.partitionings] == [3298, 7202, 12893]
    with InferenceEngine(model, device="cpu") as engine:
        prediction = engine.predict_many([_photo(4)])[0]
    assert prediction.top_cells[HIERARCHY][0].token in {p for p in model.partitionings[2].tokens}

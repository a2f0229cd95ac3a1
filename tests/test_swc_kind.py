"""The "swc" kind and its background collection: a bundle with a retrieval head is registered like any kind, the
background collection is built from shards (grouped by cell, float16, resumable), and the engine's answer is the
medoid of the densest cluster of background photos inside the top cell, with MeVer's prediction density. Without a
background photo in the cell the classifier's answer stands and the note says why."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from predictor.ml import background as background_module
from predictor.ml import kinds
from predictor.ml.background import build_background
from predictor.ml.engine import InferenceEngine
from predictor.ml.geodesy import great_circle_km
from predictor.ml.model import ActivationMaps, RetrievalRefinement, offers
from predictor.ml.network import GeoNetwork
from predictor.ml.prediction import HIERARCHY
from predictor.ml.retrieval import BackgroundCollection, SearchSettings
from predictor.ml.scenes import SceneMapping
from predictor.ml.swc import SwCModel, SwCNetwork, save_swc_bundle
from predictor.ml.train.cells import build_hierarchy
from predictor.ml.train.shards import labels_for, write_shards
from tests.train_synthetic import synthetic_photos


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("swc")
    photos = list(synthetic_photos(120, seed=5, regions=4))
    partitionings = build_hierarchy([p[1] for p in photos], [p[2] for p in photos], tau_min=3,
                                    tau_maxes=(60, 30, 12))
    write_shards(photos, root / "shards", partitionings=partitionings, samples_per_shard=50)
    torch.manual_seed(0)
    network = SwCNetwork(GeoNetwork("tiny", [len(p) for p in partitionings]), dim=32)
    bundle = save_swc_bundle(root / "plain", name="swc-plain", network=network, partitionings=partitionings,
                             scene_network=GeoNetwork("tiny", [365]), scene_mapping=SceneMapping.load_default(),
                             untrained=True, search=SearchSettings(top_k=8, eps_km=50, conf_thres=0.05))
    return root, photos, partitionings, bundle


def test_swc_bundle_without_background_keeps_the_classifier_and_says_so(world):
    _, photos, _, bundle = world
    config = kinds.verify_bundle(bundle)
    assert config["kind"] == "swc" and config["background"] is None
    model = kinds.load_bundle(bundle)
    assert isinstance(model, SwCModel) and offers(model, RetrievalRefinement) and offers(model, ActivationMaps)
    with InferenceEngine(model, max_batch_size=2, max_wait_ms=5) as engine:
        prediction = engine.predict_many([photos[0][0]])[0]
    assert prediction.refined is not None and "no background collection" in prediction.refined.note
    assert (prediction.lat, prediction.lon) == prediction.argmax[HIERARCHY]


def test_build_background_groups_by_cell_resumes_and_refines(world, tmp_path, monkeypatch):
    root, photos, partitionings, bundle = world
    fine = partitionings[-1]
    out = tmp_path / "with-bg"
    usable = [p for p in photos if labels_for(partitionings, p[1], p[2]) is not None]
    assert 90 < len(usable) <= 120
    # The first run is stopped while writing its third part.
    savez, calls = np.savez, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return savez(*args, **kwargs)
    monkeypatch.setattr(background_module.np, "savez", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build_background(bundle, root / "shards", out, batch_size=16, part_size=32, progress=False)
    assert not out.exists() and len(list((tmp_path / "with-bg.work").glob("part-*.npz"))) == 2
    monkeypatch.undo()
    result = build_background(bundle, root / "shards", out, batch_size=16, part_size=32, progress=False)
    # It continued after the two complete parts; no photo lost or embedded twice.
    assert result["resumed_from"] == 64 and result["images"] == len(usable)
    assert result["bytes_per_million"] == (2 * 32 + 8) * 1_000_000
    assert not (tmp_path / "with-bg.work").exists()

    config = kinds.verify_bundle(out)
    assert config["background"]["images"] == len(usable)
    collection = BackgroundCollection(out / "background")
    # Rows grouped by cell: cell c's rows are exactly the photos whose coordinates fall in cell c.
    expected = np.bincount([labels_for(partitionings, lat, lon)[-1] for _, lat, lon, _ in usable], minlength=len(fine))
    counts = np.array([collection.count(c) for c in range(len(fine))])
    assert (counts == expected).all()
    positions = np.array([(lat, lon) for _, lat, lon, _ in usable])
    stored = np.asarray(collection.coords, dtype=np.float64)
    assert np.allclose(stored[np.lexsort(stored.T[::-1])], positions[np.lexsort(positions.T[::-1])], atol=1e-4)

    model = kinds.load_bundle(out)
    with InferenceEngine(model, max_batch_size=4, max_wait_ms=5) as engine:
        predictions = engine.predict_many([photos[i][0] for i in range(4)])
    for prediction in predictions:
        refined = prediction.refined
        assert refined is not None and "medoid of the densest cluster" in refined.note
        # The answer is a background photo's own position inside the top f* cell, not the cell's centre.
        assert np.abs(positions - [prediction.lat, prediction.lon]).sum(axis=1).min() < 1e-3
        top = prediction.top_cells[HIERARCHY][0]
        assert great_circle_km(prediction.lat, prediction.lon, top.lat, top.lon) < 400
        # PD is MeVer's: mass of the f* cells within 25 km of the top cell.
        assert refined.score >= top.probability - 1e-6 and refined.localizable == (refined.score > 0.05)

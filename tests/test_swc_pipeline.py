"""Search within Cell end to end through the commands: synthetic photos -> shards -> `train --contrastive-weight`
(tiny backbone + retrieval head) -> `export_bundle` (an swc bundle) -> `build_background --install` -> predictions
refined inside the cell with prediction density."""
from __future__ import annotations

import json

import numpy as np
import pytest
from django.core.management import call_command
from PIL import Image

from predictor.ml.train.cells import build_hierarchy
from predictor.ml.train.datasets import SourceReport, read_metadata
from tests.train_synthetic import write_csv_dataset


@pytest.fixture(scope="module")
def swc_training(tmp_path_factory):
    root = tmp_path_factory.mktemp("swc-pipeline")
    metadata = write_csv_dataset(root / "photos", 240, seed=31)
    rows = read_metadata(metadata, SourceReport())
    hierarchy = build_hierarchy([r.lat for r in rows.values()], [r.lon for r in rows.values()], tau_min=4,
                                tau_maxes=(60, 30, 15))
    cell_files = []
    for partitioning in hierarchy:
        cell_files.append(str(root / f"{partitioning.name}.csv"))
        partitioning.to_csv(cell_files[-1])
    shards = root / "shards"
    call_command("preprocess_images", "--source", "csv", "--metadata", str(metadata),
                 "--images", str(root / "photos" / "images"), "--output", str(shards),
                 "--partitionings", *cell_files, "--val-fraction", "0.2", "--samples-per-shard", "64",
                 verbosity=0)
    run = root / "run"
    call_command("train", "--train-shards", str(shards / "train"), "--val-shards", str(shards / "val"),
                 "--partitionings", *cell_files, "--output", str(run), "--backbone", "tiny", "--epochs", "2",
                 "--batch-size", "32", "--lr", "0.05", "--crop-size", "48", "--workers", "0", "--no-progress",
                 "--contrastive-weight", "1.0", "--positive-km", "150", "--embedding-dim", "32")
    return root, shards, run, metadata


def test_training_with_a_retrieval_head_records_its_loss_and_exports_an_swc_bundle(swc_training, tiny_bundle):
    from predictor.ml.kinds import verify_bundle
    from predictor.ml.train.loop import load_checkpoint, network_from_checkpoint

    root, _, run, _ = swc_training
    history = load_checkpoint(run / "last.pt")["history"]
    assert len(history) == 2 and all(row["train_loss_contrastive"] > 0 for row in history)
    # The validation figures are the classification heads' (the embedding is not mistaken for a head).
    assert 0 <= history[-1]["val_acc2500km_hierarchy"] <= 1
    network = network_from_checkpoint(load_checkpoint(run / "best.pt"))
    assert network.retrieval.dim == 32
    bundle = root / "swc-bundle"
    call_command("export_bundle", "--checkpoint", str(run / "best.pt"), "--name", "synthetic-swc",
                 "--output", str(bundle), "--scene-model", str(tiny_bundle),
                 "--training-data", "240 synthetic colour-coded photos", verbosity=0)
    config = verify_bundle(bundle)
    assert config["kind"] == "swc" and config["background"] is None and config["retrieval"]["dim"] == 32


def test_build_background_command_installs_a_bundle_that_refines(swc_training, tiny_bundle, settings, tmp_path,
                                                                  capsys):
    from predictor import registry
    from predictor.ml.engine import InferenceEngine
    from predictor.ml.kinds import load_bundle

    settings.MODEL_DIR = tmp_path / "models"
    root, shards, run, metadata = swc_training
    bundle = root / "swc-bundle"
    if not bundle.exists():
        call_command("export_bundle", "--checkpoint", str(run / "best.pt"), "--name", "synthetic-swc",
                     "--output", str(bundle), "--scene-model", str(tiny_bundle), verbosity=0)
    call_command("build_background", "--model", str(bundle), "--shards", str(shards / "train"),
                 "--output", str(tmp_path / "swc-bg"), "--name", "synthetic-swc-bg", "--install", verbosity=0)
    out = capsys.readouterr().out
    train_count = json.loads((shards / "train" / "index.json").read_text())["samples"]
    assert f"{train_count} background photos" in out and "72 MB per million photos" in out
    assert registry.active_bundle_path().name == "synthetic-swc-bg"
    model = load_bundle(registry.active_bundle_path())
    assert model.background.images == train_count
    photos = sorted((root / "photos" / "images").glob("*.jpg"))[:3]
    with InferenceEngine(model, max_batch_size=4) as engine:
        predictions = engine.predict_many([Image.open(p) for p in photos])
    stored = np.asarray(model.background.coords, dtype=np.float64)
    for prediction in predictions:
        assert prediction.refined is not None and "medoid of the densest cluster" in prediction.refined.note
        assert np.abs(stored - [prediction.lat, prediction.lon]).sum(axis=1).min() < 1e-3
        assert 0 < prediction.refined.score <= 1

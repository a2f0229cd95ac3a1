"""Training: the network learns a real signal, checkpoints resume exactly, shards split across readers."""
from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch

from predictor.ml.train.cells import build_partitioning
from predictor.ml.train.loop import TrainConfig, load_checkpoint, train
from predictor.ml.train.shards import ShardStream, preprocess_photos, read_index
from tests.train_synthetic import REGIONS, synthetic_photos


@pytest.fixture(scope="module")
def colour_task(tmp_path_factory):
    """8 colour-coded regions; one partitioning whose cells are the regions' level-2 S2 cells."""
    root = tmp_path_factory.mktemp("colour-task")
    train_photos = list(synthetic_photos(160, seed=11))
    lats = [p[1] for p in train_photos]
    lons = [p[2] for p in train_photos]
    cells = build_partitioning(lats, lons, tau_min=5, tau_max=1000, name="coarse")
    cells.to_csv(root / "coarse.csv")
    preprocess_photos(train_photos, root / "train", partitionings=[cells], samples_per_shard=40)
    preprocess_photos(synthetic_photos(80, seed=12), root / "val", partitionings=[cells], samples_per_shard=60)
    return root, cells


def _config(root, output, **overrides) -> TrainConfig:
    values = dict(train_shards=str(root / "train" / "train"), val_shards=str(root / "val" / "train"),
                  partitionings=[str(root / "coarse.csv")], output_dir=str(output), backbone="tiny", epochs=3,
                  batch_size=32, lr=0.05, milestones=(1, 2), crop_size=32, workers=0, progress=False, seed=3)
    values.update(overrides)
    return TrainConfig(**values)


def _metrics(path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_loss_decreases_and_held_out_accuracy_beats_chance(colour_task, tmp_path):
    root, cells = colour_task
    assert len(cells) == len(REGIONS)
    result = train(_config(root, tmp_path / "run"))
    rows = _metrics(result["metrics_csv"])
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    losses = [float(r["train_loss"]) for r in rows]
    assert losses[-1] < 0.5 * losses[0]
    assert float(rows[-1]["val_loss"]) < math.log(len(cells)) / 2  # chance-level loss is ln(8)
    chance = 1 / len(cells)
    accuracy = float(rows[-1]["val_top1_coarse"])
    assert accuracy >= 2 * chance and accuracy >= 0.6
    # A correct cell puts the estimate at that region's mean: within 750 km, while regions are > 2000 km apart.
    assert float(rows[-1]["val_acc750km_hierarchy"]) >= 2 * chance
    assert int(rows[-1]["val_images"]) == 80


def test_resume_continues_at_the_next_epoch_with_the_same_learning_rate(colour_task, tmp_path):
    root, _ = colour_task
    straight = train(_config(root, tmp_path / "straight"))
    train(_config(root, tmp_path / "stopped", epochs=2))
    state = load_checkpoint(tmp_path / "stopped" / "last.pt")
    assert state["epoch"] == 2
    resumed = train(_config(root, tmp_path / "stopped", epochs=3, resume="auto"))
    rows = _metrics(resumed["metrics_csv"])
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert [float(r["lr"]) for r in rows] == pytest.approx([0.05, 0.025, 0.0125])
    # Optimizer momentum, scheduler and RNG state are restored: the result equals an uninterrupted run.
    a = load_checkpoint(straight["last"])["model"]
    b = load_checkpoint(resumed["last"])["model"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)
    assert float(rows[-1]["train_loss"]) == pytest.approx(straight["metrics"]["train_loss"], rel=1e-4)


def test_training_an_isn_uses_only_its_concept_subset(colour_task, tmp_path):
    root, _ = colour_task
    index = read_index(root / "train" / "train")
    scenes = tmp_path / "scenes.csv"
    with open(scenes, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "lat", "lon", "p_indoor", "p_natural", "p_urban"])
        ids = [meta["id"] for _, meta in _samples(root / "train" / "train")]
        for i, image_id in enumerate(ids):
            writer.writerow([image_id, 0, 0, *((0.8, 0.1, 0.1) if i % 3 == 0 else (0.1, 0.2, 0.7))])
    result = train(_config(root, tmp_path / "indoor", epochs=1, concept="indoor", scene_labels=str(scenes)))
    assert result["metrics"]["train_images"] == len([i for i in range(index["samples"]) if i % 3 == 0])


def _samples(folder):
    from predictor.ml.train.shards import iterate_tar_samples
    for shard in read_index(folder)["shards"]:
        yield from iterate_tar_samples(folder / shard["name"])


def test_stream_splits_samples_across_ranks_without_overlap(colour_task):
    root, cells = colour_task
    folder = root / "train" / "train"
    total = read_index(folder)["samples"]
    seen = []
    for rank in range(3):  # 4 shards among 3 ranks: equal counts per rank, as DDP needs
        stream = ShardStream(folder, partitionings=[cells], shuffle=True, rank=rank, world_size=3)
        ids = [item[4] for item in stream]
        assert len(ids) == total // 3
        seen.append(ids)
    all_ids = [i for ids in seen for i in ids]
    assert len(set(all_ids)) >= total - 3 * 40  # cycling to fill a rank's quota may repeat a few samples
    # Labels recomputed from lat/lon when the stream's partitionings differ from those stored at preprocessing.
    coordinates = [(p[1], p[2]) for p in synthetic_photos(160, seed=11)]
    other = build_partitioning([c[0] for c in coordinates], [c[1] for c in coordinates], tau_min=1, tau_max=8,
                               name="other")
    stream = ShardStream(folder, partitionings=[other], shuffle=False)
    assert not stream.stored_labels_valid
    image, target, lat, lon, _ = next(iter(stream))
    assert int(target[0]) == other.class_of(lat, lon)


def test_best_checkpoint_is_the_epoch_with_the_lowest_validation_loss(colour_task, tmp_path):
    from torch.utils.data import DataLoader

    from predictor.ml.train.loop import Runtime, evaluate, network_from_checkpoint
    from predictor.ml.train.shards import collate_samples, eval_transform

    root, cells = colour_task
    # Two good epochs, then the learning rate jumps 40-fold: validation gets worse, so the best is not the last.
    config = _config(root, tmp_path / "run", epochs=4, milestones=(2,), gamma=40.0)
    result = train(config)
    rows = _metrics(result["metrics_csv"])
    losses = [float(r["val_loss"]) for r in rows]
    best_epoch = int(rows[int(np.nanargmin(losses))]["epoch"])
    assert best_epoch < 4, f"the run should get worse after its best epoch: {losses}"
    best = load_checkpoint(tmp_path / "run" / "best.pt")
    assert best["epoch"] == best_epoch
    assert best["best_val_loss"] == pytest.approx(min(losses))
    assert load_checkpoint(tmp_path / "run" / "last.pt")["epoch"] == 4
    # The file holds that epoch's weights: validating them again gives the loss metrics.csv recorded for it.
    val_set = ShardStream(config.val_shards, partitionings=[cells], shuffle=False,
                          transform=eval_transform(config.crop_size))
    loader = DataLoader(val_set, batch_size=32, collate_fn=collate_samples)
    again = evaluate(network_from_checkpoint(best), loader, partitionings=[cells],
                     parents=torch.arange(len(cells))[:, None], runtime=Runtime(torch.device("cpu")),
                     config=config, precision="fp32", channels_last=False)
    assert again["val_loss"] == pytest.approx(min(losses), rel=1e-4)

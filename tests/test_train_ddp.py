"""Training one ISN under DDP: every rank runs the same number of steps even when the concept subset is spread
unevenly over the shards (a rank that runs out of batches early would leave the others waiting forever)."""
from __future__ import annotations

import csv
import datetime
import json
import os
import socket
import time

import pytest
import torch
import torch.multiprocessing as mp

from predictor.ml.train.cells import build_partitioning
from predictor.ml.train.shards import ShardStream, iterate_tar_samples, preprocess_photos, read_index
from tests.train_synthetic import synthetic_photos

WORLD = 2


@pytest.fixture(scope="module")
def skewed_concept(tmp_path_factory):
    """48 photos in 4 shards of 12; the 'indoor' subset is all of shard 0 plus one photo of shard 1, so with the
    shards dealt out per rank one rank holds 12 or 13 subset photos and the other 0 or 1."""
    root = tmp_path_factory.mktemp("skewed")
    photos = list(synthetic_photos(48, seed=31))
    cells = build_partitioning([p[1] for p in photos], [p[2] for p in photos], tau_min=2, tau_max=1000,
                               name="coarse")
    cells.to_csv(root / "coarse.csv")
    preprocess_photos(photos, root / "train", partitionings=[cells], samples_per_shard=12)
    preprocess_photos(synthetic_photos(16, seed=32), root / "val", partitionings=[cells], samples_per_shard=16)
    folder = root / "train" / "train"
    index = read_index(folder)
    by_shard = [[meta["id"] for _, meta in iterate_tar_samples(folder / s["name"])] for s in index["shards"]]
    assert len(by_shard) == 4 and len(by_shard[0]) == len(by_shard[1]) == 12
    indoor = set(by_shard[0]) | {by_shard[1][0]}
    with open(root / "scenes.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "lat", "lon", "p_indoor", "p_natural", "p_urban"])
        for ids in by_shard:
            for image_id in ids:
                writer.writerow([image_id, 0, 0, *((0.8, 0.1, 0.1) if image_id in indoor else (0.1, 0.2, 0.7))])
    return root, cells, indoor


@pytest.mark.parametrize("workers", [1, 2])
def test_every_rank_streams_the_same_number_of_subset_samples(skewed_concept, workers, monkeypatch):
    root, cells, indoor = skewed_concept
    folder = root / "train" / "train"
    for epoch in range(3):  # the shard order changes every epoch, and with it which rank holds the subset
        per_rank = []
        for rank in range(WORLD):
            stream = ShardStream(folder, partitionings=[cells], keep_ids=indoor, rank=rank, world_size=WORLD)
            stream.set_epoch(epoch)
            ids = []
            for worker in range(workers):  # what each DataLoader worker of this rank would read
                monkeypatch.setattr("predictor.ml.train.shards.worker_position", lambda w=worker: (w, workers))
                ids += [item[4] for item in stream]
            assert set(ids) <= indoor
            assert len(ids) == len(stream)
            per_rank.append(ids)
        assert len(per_rank[0]) == len(per_rank[1]) == 7  # ceil(13 / 2): the short rank is padded
        assert set(per_rank[0]) | set(per_rank[1]) == indoor  # every subset photo is trained on


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, port: int, config_values: dict, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(WORLD))
    torch.set_num_threads(1)
    # A short collective timeout turns a stalled rank into an error instead of a 30-minute hang.
    torch.distributed.init_process_group("gloo", rank=rank, world_size=WORLD,
                                         timeout=datetime.timedelta(seconds=15))
    from predictor.ml.train.loop import TrainConfig, train
    result = train(TrainConfig(**config_values))
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as handle:
        json.dump({"metrics": result["metrics"], "steps": result.get("steps")}, handle)


def test_two_process_isn_training_on_an_uneven_subset_finishes_every_epoch(skewed_concept, tmp_path):
    root, _, indoor = skewed_concept
    values = dict(train_shards=str(root / "train" / "train"), val_shards=str(root / "val" / "train"),
                  partitionings=[str(root / "coarse.csv")], output_dir=str(tmp_path / "run"), backbone="tiny",
                  epochs=2, batch_size=2, lr=0.05, milestones=(1,), crop_size=32, workers=0, progress=False,
                  device="cpu", concept="indoor", scene_labels=str(root / "scenes.csv"), seed=5)
    context = mp.start_processes(_rank_main, args=(_free_port(), values, str(tmp_path)), nprocs=WORLD, join=False,
                                 start_method="spawn")
    deadline = time.monotonic() + 90
    try:
        while not context.join(timeout=1):
            if time.monotonic() > deadline:
                pytest.fail("DDP training did not finish: a rank is waiting for the other")
    finally:
        for process in context.processes:
            if process.is_alive():
                process.terminate()
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(WORLD)]
    assert results[0]["steps"] == results[1]["steps"] == [4, 4]  # 7 samples per rank in batches of 2
    metrics = results[0]["metrics"]
    assert metrics["epoch"] == 2 and metrics["train_images"] == WORLD * 7
    with open(tmp_path / "run" / "metrics.csv", newline="") as handle:
        assert [int(r["epoch"]) for r in csv.DictReader(handle)] == [1, 2]
    assert (tmp_path / "run" / "best.pt").is_file()


def test_one_process_with_workers_trains_on_every_image(skewed_concept, tmp_path):
    # Without DDP each DataLoader worker reads whole shards: with shards of 12, 12, 12 and 10 one worker holds 24
    # images and the other 22, i.e. 2 + 1 batches of 23; nothing may be cut off by a step count made for DDP.
    from predictor.ml.train.loop import TrainConfig, train

    root, _, _ = skewed_concept
    result = train(TrainConfig(train_shards=str(root / "train" / "train"), val_shards=str(root / "val" / "train"),
                               partitionings=[str(root / "coarse.csv")], output_dir=str(tmp_path / "run"),
                               backbone="tiny", epochs=1, batch_size=23, crop_size=32, workers=2, progress=False,
                               device="cpu"))
    assert result["metrics"]["train_images"] == read_index(root / "train" / "train")["samples"] == 46
    assert result["steps"] == [3]

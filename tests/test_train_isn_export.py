"""The paper's main model through the commands: three ISNs trained with `train --concept`, bundled with
`export_bundle --isn`, installed, and serving photos through the network of each photo's scene concept."""
from __future__ import annotations

import csv
import re

import numpy as np
import pytest
import torch
from django.core.management import call_command
from PIL import Image

from predictor.ml.geodesy import great_circle_km
from predictor.ml.prediction import S3_CONCEPTS
from predictor.ml.train.cells import build_hierarchy
from predictor.ml.train.shards import iterate_tar_samples, preprocess_photos, read_index
from tests.train_synthetic import COLOURS, REGIONS, synthetic_photos

# Region k of the synthetic photos (red, green, blue) is concept k.
CONCEPT_REGION = {concept: k for k, concept in enumerate(S3_CONCEPTS)}


def _colour_scene_classifier(path, mapping) -> None:
    """A tiny Places365 network that sees colour: the red, green and blue channels pass straight through the four
    convolutions, and the head puts a photo's mass on a Places365 category of concept indoor (red), natural
    (green) or urban (blue). A real classifier would be trained; this one makes the routing predictable."""
    from safetensors.torch import save_file

    from predictor.ml.network import GeoNetwork

    network = GeoNetwork("tiny", [365])
    with torch.no_grad():
        for name, parameter in network.state_dict().items():
            if name.endswith("weight") and parameter.dim() == 4:
                parameter.zero_()
                for channel in range(3):
                    parameter[channel, channel, 1, 1] = 1.0  # centre tap: channel passes through unchanged
        head = network.heads[0]
        head.weight.zero_()
        head.bias.fill_(-20.0)
        for k in range(3):
            category = int(np.argmax(mapping.matrix[:, k]))  # a category that is entirely concept k
            head.weight[category, k] = 20.0
            head.bias[category] = 0.0
    save_file({k: v.contiguous() for k, v in network.state_dict().items()}, str(path))


@pytest.fixture(scope="module")
def three_isns(tmp_path_factory):
    """Cells, shards and scene labels for 3 colour-coded regions; one tiny ISN trained per concept on its region."""
    root = tmp_path_factory.mktemp("isn")
    photos = list(synthetic_photos(150, seed=41, regions=3))
    hierarchy = build_hierarchy([p[1] for p in photos], [p[2] for p in photos], tau_min=4, tau_maxes=(60, 30, 15))
    cell_files = []
    for partitioning in hierarchy:
        cell_files.append(str(root / f"{partitioning.name}.csv"))
        partitioning.to_csv(cell_files[-1])
    preprocess_photos(photos, root / "shards", partitionings=hierarchy, val_fraction=0.2, samples_per_shard=40)
    scenes = root / "scenes.csv"
    with open(scenes, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "lat", "lon", "p_indoor", "p_natural", "p_urban"])
        folder = root / "shards" / "train"
        for shard in read_index(folder)["shards"]:
            for _, meta in iterate_tar_samples(folder / shard["name"]):
                region = int(meta["id"].split("-")[1]) % 3
                writer.writerow([meta["id"], meta["lat"], meta["lon"], *np.eye(3)[region]])
    checkpoints = {}
    for concept in S3_CONCEPTS:
        run = root / concept
        call_command("train", "--train-shards", str(root / "shards" / "train"), "--val-shards",
                     str(root / "shards" / "val"), "--partitionings", *cell_files, "--output", str(run),
                     "--backbone", "tiny", "--epochs", "2", "--batch-size", "16", "--lr", "0.05", "--milestones",
                     "1", "--crop-size", "32", "--workers", "0", "--no-progress", "--concept", concept,
                     "--scene-labels", str(scenes), "--name", f"isn-{concept}")
        checkpoints[concept] = run / "best.pt"
    return root, checkpoints


def test_three_isns_export_install_and_route_photos_to_their_concepts_network(three_isns, tmp_path):
    from predictor import registry
    from predictor.ml.kinds import load_bundle
    from predictor.ml.engine import InferenceEngine
    from predictor.ml.scenes import SceneMapping
    from predictor.ml.train.loop import load_checkpoint

    root, checkpoints = three_isns
    scene_weights = tmp_path / "colour-scenes.safetensors"
    _colour_scene_classifier(scene_weights, SceneMapping.load_default())
    bundle = tmp_path / "bundle"
    call_command("export_bundle", "--isn", *(f"{c}={checkpoints[c]}" for c in S3_CONCEPTS),
                 "--scene-weights", str(scene_weights), "--scene-backbone", "tiny", "--name", "isn-synthetic",
                 "--output", str(bundle), "--training-data", "150 synthetic photos, one region per concept",
                 verbosity=0)

    # The card's accuracy section carries every ISN's own validation figures, at its best epoch.
    card = (bundle / "MODEL_CARD.md").read_text()
    accuracy_section = card.split("## Measured accuracy", 1)[1].split("\n## ", 1)[0]
    for concept in S3_CONCEPTS:
        history = load_checkpoint(checkpoints[concept])["history"]
        best = min(history, key=lambda row: row["val_loss"])
        line = next(line for line in accuracy_section.splitlines() if line.startswith(f"- ISN {concept}:"))
        assert f"2500 km: {100 * best['val_acc2500km_hierarchy']:.1f}%" in line

    installed = registry.install_bundle(bundle, activate=True)
    model = load_bundle(registry.active_bundle_path())
    assert installed.name == model.name == "isn-synthetic"
    assert set(model.isn.networks) == set(S3_CONCEPTS)

    # Each ISN only ever saw its own region, so where a photo is placed shows which network answered it.
    photos, expected = [], []
    for concept, region in CONCEPT_REGION.items():
        for shade in (0, 25):
            colour = tuple(max(0, c - shade) for c in COLOURS[region])
            photos.append(Image.new("RGB", (80, 60), colour))
            expected.append((concept, region))
    with InferenceEngine(model, max_batch_size=4) as engine:
        predictions = engine.predict_many(photos)
    for prediction, (concept, region) in zip(predictions, expected):
        assert not isinstance(prediction, Exception)
        assert prediction.scene.concept == concept
        assert max(prediction.scene.s3, key=prediction.scene.s3.get) == concept
        lat, lon = REGIONS[region]
        assert great_circle_km(prediction.lat, prediction.lon, lat, lon) < 500, (concept, prediction.lat,
                                                                                 prediction.lon)


def test_isn_export_takes_each_checkpoints_own_concept_and_refuses_the_wrong_ones(three_isns, tmp_path, tiny_bundle):
    from django.core.management.base import CommandError

    root, checkpoints = three_isns
    common = ["--scene-model", str(tiny_bundle), "--device", "cpu"]
    # Concepts are read from the checkpoints: the order and the CONCEPT= prefix are optional.
    call_command("export_bundle", "--isn", str(checkpoints["urban"]), str(checkpoints["indoor"]),
                 f"natural={checkpoints['natural']}", "--name", "isn-any-order", "--output", str(tmp_path / "ok"),
                 *common, verbosity=0)
    card = (tmp_path / "ok" / "MODEL_CARD.md").read_text()
    assert re.search(r"- ISN natural: trained [12] epochs? (\(the checkpoint .* of a 2-epoch run\) )?on \d+ images, "
                     r"tiny", card)
    assert "Scene classifier: UNTRAINED (scene classifier copied from bundle 'tiny-untrained'" in card
    with pytest.raises(CommandError, match=rf"{checkpoints['urban']} was trained for the 'urban' concept, not "
                                           "'natural': give it as urban="):
        call_command("export_bundle", "--isn", f"indoor={checkpoints['indoor']}",
                     f"natural={checkpoints['urban']}", f"urban={checkpoints['natural']}", "--name", "swapped",
                     "--output", str(tmp_path / "swapped"), *common)
    base = root / "base"
    call_command("train", "--train-shards", str(root / "shards" / "train"), "--val-shards",
                 str(root / "shards" / "val"), "--partitionings", *[str(root / f"{n}.csv") for n in
                                                                    ("coarse", "middle", "fine")],
                 "--output", str(base), "--backbone", "tiny", "--epochs", "1", "--batch-size", "16",
                 "--crop-size", "32", "--workers", "0", "--no-progress", "--device", "cpu")
    with pytest.raises(CommandError, match="is a base network .*, not the 'natural' ISN: an ISN bundle needs one "
                                           "network trained per concept"):
        call_command("export_bundle", "--isn", f"indoor={checkpoints['indoor']}", f"natural={base / 'best.pt'}",
                     f"urban={checkpoints['urban']}", "--name", "base-as-isn", "--output", str(tmp_path / "b"),
                     *common)
    with pytest.raises(CommandError, match="trained for the 'indoor' concept only .* bundle the three ISNs with --isn"):
        call_command("export_bundle", "--checkpoint", str(checkpoints["indoor"]), "--name", "isn-as-base",
                     "--output", str(tmp_path / "c"), *common)
    with pytest.raises(CommandError, match="two checkpoints were trained for the 'indoor' concept"):
        call_command("export_bundle", "--isn", str(checkpoints["indoor"]), str(checkpoints["indoor"]),
                     str(checkpoints["urban"]), "--name", "twice", "--output", str(tmp_path / "d"), *common)
    assert not any((tmp_path / name).exists() for name in ("swapped", "b", "c", "d"))

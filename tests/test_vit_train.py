"""The multi-task ViT: its network (two patch-embedding branches, partition + scene heads, attention rollout), scene
labels from label_scenes or MP-16-style CSVs, segmentation maps in the shards, and training it on the CPU."""
from __future__ import annotations

import csv
import io
import math

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.models.vision_transformer import VisionTransformer

from predictor.ml.segmentation import PhotoSegmenter, SegmentationNetwork, load_segmenter, palette
from predictor.ml.train.cells import build_partitioning
from predictor.ml.train.loop import TrainConfig, load_checkpoint, network_from_checkpoint, train
from predictor.ml.train.shards import SEGMENTATION_KEY, ShardStream, iterate_tar_samples, preprocess_photos, read_index
from predictor.ml.train.vit_data import PairTransform, read_scene_targets
from predictor.ml.vit_network import VIT_BACKBONES, ViTGeoNetwork
from tests.train_synthetic import REGIONS, synthetic_photos


def _scene_of(image_id: str) -> int:
    """The synthetic photos' scene: region index mod 3 (so the colour tells the scene too)."""
    return int(image_id.rsplit("-", 1)[1]) % len(REGIONS) % 3


def _write_scene_csv(path, photos, column="S3_Label"):
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["IMG_ID", "LAT", "LON", column])
        for _, lat, lon, image_id in photos:
            writer.writerow([image_id, lat, lon, _scene_of(image_id)])
    return path


@pytest.fixture(scope="module")
def vit_task(tmp_path_factory):
    root = tmp_path_factory.mktemp("vit-task")
    train_photos = list(synthetic_photos(160, seed=11))
    val_photos = list(synthetic_photos(48, seed=12))
    cells = build_partitioning([p[1] for p in train_photos], [p[2] for p in train_photos], tau_min=5, tau_max=1000,
                               name="coarse")
    cells.to_csv(root / "coarse.csv")
    torch.manual_seed(0)
    segmenter = PhotoSegmenter(SegmentationNetwork("tiny", 5))
    preprocess_photos(train_photos, root / "train", partitionings=[cells], samples_per_shard=40, segmenter=segmenter)
    preprocess_photos(val_photos, root / "val", partitionings=[cells], samples_per_shard=60, segmenter=segmenter)
    _write_scene_csv(root / "scenes.csv", train_photos + val_photos)
    return root, cells


def _config(root, output, **overrides) -> TrainConfig:
    values = dict(train_shards=str(root / "train" / "train"), val_shards=str(root / "val" / "train"),
                  partitionings=[str(root / "coarse.csv")], output_dir=str(output), backbone="vit_tiny", epochs=4,
                  batch_size=16, lr=0.05, milestones=(3,), crop_size=32, crop_scale=(0.9, 1.0), workers=0,
                  progress=False, seed=3, scene_labels=str(root / "scenes.csv"))
    values.update(overrides)
    return TrainConfig(**values)


def _metrics(path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_vit_network_heads_branches_and_rollout():
    torch.manual_seed(0)
    rgb = ViTGeoNetwork("vit_tiny", [5, 9], scene_classes=16, image_size=32)
    outputs = rgb(torch.randn(2, 3, 32, 32))
    assert [tuple(o.shape) for o in outputs] == [(2, 5), (2, 9), (2, 16)]
    both = ViTGeoNetwork("vit_tiny", [5], scene_classes=3, seg_channels=3, image_size=32)
    x = torch.randn(2, 6, 32, 32)
    assert [tuple(o.shape) for o in both(x)] == [(2, 5), (2, 3)]
    # The segmentation branch is really an input: changing only the map changes the answer.
    changed = x.clone()
    changed[:, 3:] = -x[:, 3:]
    assert not torch.allclose(both(x)[0], both(changed)[0])
    with pytest.raises(ValueError, match=r"\[N, 6, 32, 32\]"):
        both(torch.randn(2, 3, 32, 32))
    rollout = both.attention_rollout(x)
    assert tuple(rollout.shape) == (2, 2, 2)
    assert float(rollout.min()) == 0.0 and float(rollout.max()) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="3, 16 or 365"):
        ViTGeoNetwork("vit_tiny", [5], scene_classes=7)


def test_vit_b_16_and_s_16_are_the_reference_sizes():
    with torch.device("meta"):
        base = ViTGeoNetwork("vit_b_16", [3298, 7202, 12893])
        small = ViTGeoNetwork("vit_s_16", [3298, 7202, 12893])
    body = lambda net: sum(p.numel() for n, p in net.named_parameters() if n.startswith("vit."))  # noqa: E731
    assert body(base) == pytest.approx(85.8e6, rel=0.01)  # torchvision's ViT-B/16 without its ImageNet head
    assert body(small) == pytest.approx(21.7e6, rel=0.02)


def test_pretrained_imagenet_state_dict_loads_from_disk(tmp_path):
    reference = VisionTransformer(image_size=32, **VIT_BACKBONES["vit_tiny"])  # with its 1000-way ImageNet head
    path = tmp_path / "vit_tiny_imagenet.pth"
    torch.save(reference.state_dict(), path)
    network = ViTGeoNetwork("vit_tiny", [4], image_size=32, pretrained_path=path)
    assert torch.equal(network.vit.conv_proj.weight, reference.conv_proj.weight)
    assert torch.equal(network.vit.encoder.layers[1].mlp[0].weight, reference.encoder.layers[1].mlp[0].weight)
    other = VisionTransformer(image_size=32, patch_size=16, num_layers=1, num_heads=2, hidden_dim=32, mlp_dim=64)
    torch.save(other.state_dict(), tmp_path / "other.pth")
    with pytest.raises(ValueError, match="not a torchvision vit_tiny state dict"):
        ViTGeoNetwork("vit_tiny", [4], image_size=32, pretrained_path=tmp_path / "other.pth")


def test_scene_labels_from_label_scenes_and_metadata_csvs(tmp_path):
    label_scenes = tmp_path / "labels.csv"
    label_scenes.write_text("id,lat,lon,p_indoor,p_natural,p_urban,s3_label,top365,top365_probability\n"
                            "a,1,2,0.1,0.7,0.2,natural,x,0.5\nb,1,2,0.6,0.3,0.1,indoor,y,0.5\n")
    assert read_scene_targets(label_scenes) == {"a": 1, "b": 0}
    with pytest.raises(ValueError, match="not 16"):
        read_scene_targets(label_scenes, classes=16)
    meta = tmp_path / "im2gps_places365.csv"
    meta.write_text("IMG_ID,AUTHOR,LAT,LON,S3_Label,S16_Label,S365_Label\nx.jpg,u,1,2,2,12,300\ny.jpg,v,1,2,0,3,40\n")
    assert read_scene_targets(meta, classes=3) == {"x.jpg": 2, "y.jpg": 0}
    assert read_scene_targets(meta, classes=16) == {"x.jpg": 12, "y.jpg": 3}
    assert read_scene_targets(meta, classes=365) == {"x.jpg": 300, "y.jpg": 40}


def test_shards_carry_a_colour_coded_segmentation_map_per_photo(vit_task):
    root, _ = vit_task
    folder = root / "train" / "train"
    index = read_index(folder)
    assert index["segmentation"] == {"arch": "tiny", "num_classes": 5, "channels": 3}
    colours = {tuple(c) for c in palette(5)}
    count = 0
    for shard in index["shards"]:
        for jpeg, meta in iterate_tar_samples(folder / shard["name"]):
            seg = Image.open(io.BytesIO(meta[SEGMENTATION_KEY]))
            assert seg.mode == "RGB" and seg.size == Image.open(io.BytesIO(jpeg)).size
            assert {tuple(c) for c in np.asarray(seg).reshape(-1, 3)} <= colours
            count += 1
    assert count == 160
    stream = ShardStream(folder, partitionings=[], shuffle=False, segmentation=True,
                         transform=PairTransform(32, train=False), scene_targets={})
    image, target, *_ = next(iter(stream))
    assert tuple(image.shape) == (6, 32, 32) and float(image[3:].abs().max()) <= 1.0
    assert int(target[-1]) == -100  # no scene label known: ignored by the loss


def test_segmentation_network_loads_a_torchvision_state_dict_from_disk(tmp_path):
    torch.manual_seed(1)
    source = SegmentationNetwork("deeplabv3_mobilenet_v3_large", 21)
    torch.save(source.net.state_dict(), tmp_path / "deeplab.pth")
    loaded = load_segmenter(tmp_path / "deeplab.pth", arch="deeplabv3_mobilenet_v3_large")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded.eval().classes(x), source.eval().classes(x))
    with pytest.raises(ValueError, match="not a fcn_resnet50"):
        load_segmenter(tmp_path / "deeplab.pth", arch="fcn_resnet50")


def test_multitask_vit_learns_cells_and_scene_with_segmentation(vit_task, tmp_path):
    root, cells = vit_task
    result = train(_config(root, tmp_path / "run", segmentation=True, scene_weight=0.5))
    rows = _metrics(result["metrics_csv"])
    losses = [float(r["train_loss"]) for r in rows]
    assert losses[-1] < 0.7 * losses[0]
    assert float(rows[-1]["val_top1_coarse"]) >= 2 / len(cells)
    assert float(rows[-1]["val_top1_scene"]) > 1 / 3 + 0.15
    assert "train_loss_scene" in rows[-1]
    state = load_checkpoint(result["last"])
    network = network_from_checkpoint(state)
    assert isinstance(network, ViTGeoNetwork) and network.seg_channels == 3 and network.scene_classes == 3


def test_scene_of_interest_trains_on_that_scene_only(vit_task, tmp_path):
    root, _ = vit_task
    result = train(_config(root, tmp_path / "urban", scene_of_interest="urban", epochs=1))
    urban = sum(1 for i in range(160) if _scene_of(f"s11-{i:05d}") == 2)
    assert int(_metrics(result["metrics_csv"])[0]["train_images"]) == urban
    with pytest.raises(ValueError, match="needs --scene-labels"):
        train(_config(root, tmp_path / "none", scene_labels=None, epochs=1))
    assert math.isfinite(float(_metrics(result["metrics_csv"])[0]["train_loss"]))


def test_commands_write_segmented_shards_and_train_a_vit(tmp_path):
    from django.core.management import call_command

    from tests.train_synthetic import write_csv_dataset

    metadata = write_csv_dataset(tmp_path / "data", 24, seed=31)
    rows = list(csv.DictReader(open(metadata, newline="")))
    with open(tmp_path / "scenes.csv", "w", newline="") as handle:  # the MP-16 metadata layout, with S3_Label
        writer = csv.writer(handle)
        writer.writerow(["IMG_ID", "LAT", "LON", "S3_Label"])
        writer.writerows([r["IMG_ID"], r["LAT"], r["LON"], i % 3] for i, r in enumerate(rows))
    cells = build_partitioning([float(r["LAT"]) for r in rows], [float(r["LON"]) for r in rows], tau_min=2,
                               tau_max=1000, name="coarse")
    cells.to_csv(tmp_path / "coarse.csv")
    torch.manual_seed(0)
    torch.save(SegmentationNetwork("tiny", 21).net.state_dict(), tmp_path / "seg.pth")
    call_command("preprocess_images", "--source", "csv", "--metadata", str(metadata), "--images",
                 str(tmp_path / "data" / "images"), "--output", str(tmp_path / "shards"), "--partitionings",
                 str(tmp_path / "coarse.csv"), "--val-fraction", "0.25", "--segmentation", str(tmp_path / "seg.pth"),
                 "--segmentation-arch", "tiny", verbosity=0)
    assert read_index(tmp_path / "shards" / "train")["segmentation"]["arch"] == "tiny"
    call_command("train", "--backbone", "vit_tiny", "--train-shards", str(tmp_path / "shards" / "train"),
                 "--val-shards", str(tmp_path / "shards" / "val"), "--partitionings", str(tmp_path / "coarse.csv"),
                 "--output", str(tmp_path / "run"), "--epochs", "1", "--batch-size", "8", "--crop-size", "32",
                 "--workers", "0", "--no-progress", "--scene-labels", str(tmp_path / "scenes.csv"),
                 "--scene-weight", "2", "--segmentation", "--max-steps-per-epoch", "2")
    state = load_checkpoint(tmp_path / "run" / "last.pt")
    assert state["config"]["scene_weight"] == 2 and state["config"]["segmentation"] is True
    assert network_from_checkpoint(state).seg_channels == 3

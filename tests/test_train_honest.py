"""Numbers that can be trusted: validation kept apart by author or place, test sets checked against the training data,
collapse and calibration reported, every row's protocol and every untrained part named on the model card.

The first test is the synthetic end-to-end run CI relies on: photos in bursts by author (as MP-16 holds them),
training with `--val-split-by author`, and a card that states its protocol, overlap and collapse figures.
"""
from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import s2sphere
import torch
from django.core.management import call_command
from django.core.management.base import CommandError

from predictor.ml.evaluation import PredictionSpread
from predictor.ml.train.holdout import find_overlap, image_key, read_samples
from predictor.ml.train.loop import load_checkpoint
from predictor.ml.train.shards import read_index
from tests.train_synthetic import write_burst_dataset


@pytest.fixture(scope="module")
def bursts(tmp_path_factory):
    """256 photos in bursts of 4 (one author, one exact spot each), cells, one shard folder; a disjoint test set."""
    root = tmp_path_factory.mktemp("bursts")
    metadata = write_burst_dataset(root / "photos", 256, seed=5)
    call_command("build_partitions", "--coords", str(metadata), "--hierarchy", "--tau-min", "4", "--tau-max", "60",
                 "30", "15", "--out-dir", str(root / "cells"), verbosity=0)
    cells = [str(root / "cells" / f"cells_4_{t}.csv") for t in (60, 30, 15)]
    call_command("preprocess_images", "--source", "csv", "--metadata", str(metadata), "--images",
                 str(root / "photos" / "images"), "--output", str(root / "shards"), "--partitionings", *cells,
                 verbosity=0)
    test_meta = write_burst_dataset(root / "test", 24, seed=6)
    return {"root": root, "metadata": metadata, "cells": cells, "shards": root / "shards" / "train",
            "test_meta": test_meta, "test_images": root / "test" / "images"}


def _train(data, output, *extra, **kwargs):
    call_command("train", "--train-shards", str(data["shards"]), "--partitionings", *data["cells"], "--output",
                 str(output), "--backbone", "tiny", "--epochs", "1", "--batch-size", "32", "--lr", "0.05",
                 "--crop-size", "48", "--workers", "0", "--no-progress", "--device", "cpu", *extra, **kwargs)


def _with_s3_label(meta, path):
    """The test meta with the S3_Label column `evaluate` needs (all 'urban': the synthetic photos have no scene)."""
    with open(meta, newline="") as source, open(path, "w", newline="") as target:
        rows = list(csv.DictReader(source))
        writer = csv.DictWriter(target, fieldnames=[*rows[0], "S3_Label"])
        writer.writeheader()
        writer.writerows({**row, "S3_Label": 2} for row in rows)
    return path


def test_synthetic_run_split_by_author_exports_a_card_with_protocol_overlap_and_collapse(bursts, tmp_path, capsys,
                                                                                         tiny_bundle):
    from predictor import registry

    run = tmp_path / "run"
    _train(bursts, run, "--val-fraction", "0.25", "--val-split-by", "author")
    printed = capsys.readouterr().out
    assert "25 % held out by author (every photo of an author on one side) from the training shards" in printed
    validation = load_checkpoint(run / "best.pt")["validation"]
    overlap = validation["overlap"]
    stored = read_index(bursts["shards"])["samples"]
    assert 30 < overlap["evaluated"] < 100 and overlap["training"] + overlap["evaluated"] == stored
    assert overlap["shared_ids"] == overlap["shared_author_coordinate"] == overlap["shared_authors"] == 0

    bundle = tmp_path / "bundle"
    call_command("export_bundle", "--checkpoint", str(run / "best.pt"), "--name", "bursts", "--output", str(bundle),
                 "--scene-model", str(tiny_bundle), "--test", "bursts-test", str(bursts["test_meta"]),
                 str(bursts["test_images"]), "--device", "cpu", verbosity=0)
    card = (bundle / "MODEL_CARD.md").read_text()
    # Protocol: how validation was kept apart, and the training crop beside the serving crops.
    assert "## Evaluation protocol" in card
    assert (f"- validation: 25 % held out by author (every photo of an author on one side) from the training "
            f"shards; shorter side 54 px, centre crop 48 px; 0 of {overlap['evaluated']} are training photos") in card
    assert "RandomResizedCrop 48 px (scale 0.66–1)" in card
    assert "Serving and every test row: shorter side 256 px, five 224 px crops, max over the crops" in card
    assert "WARNING: trained on 48 px crops but serves 224 px crops" in card
    # Overlap of the test set with the training data.
    assert f"- bursts-test: 0 of 24 are training photos (compared with {stored} training and validation images" \
        in card
    # Spread and calibration of the test predictions, and of the validation predictions.
    spread_section = card.split("## Prediction spread and calibration", 1)[1].split("\n## ", 1)[0]
    assert "- bursts-test: distinct predicted cells:" in spread_section and "for 24 photos" in spread_section
    assert "expected calibration error" in spread_section
    assert f"distinct f* cells for {overlap['evaluated']} images" in spread_section
    config = json.loads((bundle / "config.json").read_text())
    assert config["training"]["crop_size"] == 48 and config["input"]["crop_size"] == 224
    assert config["training"]["networks"]["base"]["validation"]["split"]["by"] == "author"

    # `evaluate` on the same test set gives the card's test row and the same spread figures.
    registry.install_bundle(bundle, activate=False)
    meta = _with_s3_label(bursts["test_meta"], tmp_path / "test_meta.csv")
    call_command("evaluate", "--meta", str(meta), "--images", str(bursts["test_images"]), "--model", "bursts",
                 "--device", "cpu", "--out", str(tmp_path / "eval"))
    printed = capsys.readouterr().out
    assert "overlap with the training data: 0 of 24 are training photos" in printed
    report = json.loads((tmp_path / "eval" / "bursts_accuracy.json").read_text())
    row = next(line for line in card.splitlines() if line.startswith("- bursts-test (24 images; serving protocol)"))
    for threshold, value in report["rows"][0]["accuracy"].items():
        assert f"{threshold} km: {100 * value:.1f}%" in row
    assert f"distinct predicted cells: {report['spread']['distinct_cells']} for 24 photos" in spread_section
    assert f"{report['spread']['ece']:.3f}" in spread_section
    assert report["overlap_with_training"]["overlapping"] == 0


def test_a_split_by_image_leaks_bursts_and_the_record_says_so(bursts, tmp_path, capsys):
    run = tmp_path / "by-image"
    _train(bursts, run, "--val-fraction", "0.25", "--val-split-by", "image")
    overlap = load_checkpoint(run / "last.pt")["validation"]["overlap"]
    # No image on both sides, but most validation photos have a burst sibling at the same spot in training.
    assert overlap["shared_ids"] == 0
    assert overlap["shared_author_coordinate"] > overlap["evaluated"] // 2
    assert overlap["shared_authors"] == overlap["shared_author_coordinate"]
    assert f"{overlap['shared_authors']} have an author with training photos" in capsys.readouterr().out


def test_place_split_puts_each_s2_cell_on_one_side(bursts, tmp_path, capsys):
    out = tmp_path / "by-place"
    call_command("preprocess_images", "--source", "csv", "--metadata", str(bursts["metadata"]), "--images",
                 str(bursts["root"] / "photos" / "images"), "--output", str(out), "--val-fraction", "0.3",
                 "--val-split-by", "place", "--val-place-level", "4", verbosity=0)
    assert "30 % held out by place (S2 cells of level 4, each on one side)" in capsys.readouterr().out

    def cells(folder):
        return {s2sphere.CellId.from_lat_lng(s2sphere.LatLng.from_degrees(s.lat, s.lon)).parent(4).to_token()
                for s in read_samples(folder)}

    train, val = cells(out / "train"), cells(out / "val")
    assert train and val and not train & val


def test_author_split_of_real_photos_keeps_every_photographer_on_one_side(shared_data, tmp_path, capsys):
    photos = shared_data / "im2gps3k-cc" / "photos"
    names = {p.name for p in photos.glob("*.jpg")}
    meta = tmp_path / "im2gps3k-cc.csv"
    with open(shared_data / "geoestimation" / "im2gps3k_places365.csv", newline="") as source, \
            open(meta, "w", newline="") as target:
        reader = csv.DictReader(source)
        writer = csv.DictWriter(target, fieldnames=reader.fieldnames)
        writer.writeheader()
        writer.writerows(row for row in reader if row["IMG_ID"] in names)
    call_command("preprocess_images", "--source", "csv", "--metadata", str(meta), "--images", str(photos),
                 "--output", str(tmp_path / "by-author"), "--val-fraction", "0.3", verbosity=0)
    printed = capsys.readouterr().out
    assert "validation split: 30 % held out by author (every photo of an author on one side) (188 by author)" \
        in printed
    train = list(read_samples(tmp_path / "by-author" / "train"))
    val = list(read_samples(tmp_path / "by-author" / "val"))
    assert len(train) + len(val) == 188 and val
    assert not {s.author for s in train} & {s.author for s in val}
    # The same photos split by image: photographers (and their exact spots) end up on both sides.
    call_command("preprocess_images", "--source", "csv", "--metadata", str(meta), "--images", str(photos),
                 "--output", str(tmp_path / "by-image"), "--val-fraction", "0.3", "--val-split-by", "image",
                 verbosity=0)
    leak = find_overlap(read_samples(tmp_path / "by-image" / "val"), read_samples(tmp_path / "by-image" / "train"))
    assert leak.shared_ids == 0 and leak.shared_authors > leak.evaluated // 2 and leak.shared_shots > 0


def _tib_validation_csv(path, photos) -> None:
    """TIB's yfcc25600_places365.csv layout."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["IMG_ID", "AUTHOR", "LAT", "LON", "S3_Label", "S16_Label", "S365_Label", "Prob_indoor",
                         "Prob_natural", "Prob_urban"])
        for image_id, author, lat, lon in photos:
            writer.writerow([image_id, author, lat, lon, 2, 12, 300, 0.1, 0.2, 0.7])


def test_a_separate_validation_set_in_tibs_layout(bursts, tmp_path, capsys):
    val_photos = write_burst_dataset(tmp_path / "yfcc", 32, seed=8)
    with open(val_photos, newline="") as handle:
        rows = [(r["IMG_ID"], r["AUTHOR"], r["LAT"], r["LON"]) for r in csv.DictReader(handle)]
    _tib_validation_csv(tmp_path / "yfcc25600_places365.csv", rows)
    call_command("preprocess_images", "--source", "csv", "--metadata", str(tmp_path / "yfcc25600_places365.csv"),
                 "--images", str(tmp_path / "yfcc" / "images"), "--output", str(tmp_path / "yfcc-shards"),
                 "--partitionings", *bursts["cells"], "--validation-set", verbosity=0)
    assert not (tmp_path / "yfcc-shards" / "train").exists()
    val = tmp_path / "yfcc-shards" / "val"
    assert {s.author for s in read_samples(val)} == {r[1].lower() for r in rows}
    _train(bursts, tmp_path / "run", "--val-shards", str(val))
    assert "validation: 32 images, a separate shard folder" in capsys.readouterr().out
    assert load_checkpoint(tmp_path / "run" / "last.pt")["validation"]["overlap"]["overlapping"] == 0

    # A "validation set" holding training photos is refused, unless the run says it knows (then it is recorded).
    with open(bursts["metadata"], newline="") as handle:
        training_rows = [(r["IMG_ID"], r["AUTHOR"], r["LAT"], r["LON"]) for r in csv.DictReader(handle)][:12]
    _tib_validation_csv(tmp_path / "reused.csv", training_rows)
    call_command("preprocess_images", "--source", "csv", "--metadata", str(tmp_path / "reused.csv"), "--images",
                 str(bursts["root"] / "photos" / "images"), "--output", str(tmp_path / "reused"), "--partitionings",
                 *bursts["cells"], "--validation-set", verbosity=0)
    with pytest.raises(CommandError, match=r"(\d+) of the \1 validation images are also training images"):
        _train(bursts, tmp_path / "refused", "--val-shards", str(tmp_path / "reused" / "val"))
    assert not (tmp_path / "refused" / "last.pt").exists()
    _train(bursts, tmp_path / "allowed", "--val-shards", str(tmp_path / "reused" / "val"), "--allow-overlap")
    assert load_checkpoint(tmp_path / "allowed" / "last.pt")["validation"]["allowed_overlap"] is True


def test_overlapping_real_test_photos_are_refused_by_evaluate_and_counted_when_allowed(shared_data, tmp_path,
                                                                                     tiny_bundle, capsys):
    """The issue's run: Im2GPS3k photos that were also training photos. Some share the id; others are a burst
    sibling (same Flickr author, same coordinate) of a training photo."""
    photos = shared_data / "im2gps3k-cc" / "photos"
    names = {p.name for p in photos.glob("*.jpg")}
    with open(shared_data / "geoestimation" / "im2gps3k_places365.csv", newline="") as handle:
        reader = csv.DictReader(handle)
        fields = reader.fieldnames
        rows = [row for row in reader if row["IMG_ID"] in names]
    groups: dict = {}
    for row in rows:
        groups.setdefault((row["AUTHOR"], round(float(row["LAT"]), 4), round(float(row["LON"]), 4)), []).append(row)
    bursts = [members for members in groups.values() if len(members) > 1][:6]
    training = [members[0] for members in bursts] + [r for r in rows if len(groups[(
        r["AUTHOR"], round(float(r["LAT"]), 4), round(float(r["LON"]), 4))]) == 1][:4]
    siblings = [members[1] for members in bursts]
    unseen = [r for r in rows if r not in training and r not in siblings and r["AUTHOR"] not in
              {t["AUTHOR"] for t in training}][:4]

    def write(path, chosen):
        with open(path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=fields)
            writer.writeheader()
            writer.writerows(chosen)
        return path

    # Training shards from the training rows; the meta file carries no AUTHOR: the Flickr file names give it.
    train_meta = write(tmp_path / "train.csv", training)
    call_command("preprocess_images", "--source", "csv", "--metadata", str(train_meta), "--images", str(photos),
                 "--output", str(tmp_path / "shards"), verbosity=0)
    test_meta = write(tmp_path / "test.csv", training[:3] + siblings + unseen)
    with pytest.raises(CommandError, match=r"9 of its 13 photos are training photos \(3 by image id, 6 by author and "
                                           r"coordinate"):
        call_command("evaluate", "--meta", str(test_meta), "--images", str(photos), "--model", str(tiny_bundle),
                     "--train-shards", str(tmp_path / "shards" / "train"), "--device", "cpu")
    call_command("evaluate", "--meta", str(test_meta), "--images", str(photos), "--model", str(tiny_bundle),
                 "--train-shards", str(tmp_path / "shards" / "train"), "--device", "cpu", "--allow-overlap",
                 "--out", str(tmp_path / "eval"))
    assert "overlap with the training data: 9 of 13 are training photos" in capsys.readouterr().out
    report = json.loads((tmp_path / "eval" / "tiny-untrained_accuracy.json").read_text())
    assert report["overlap_with_training"]["shared_ids"] == 3
    assert report["overlap_with_training"]["shared_author_coordinate"] == 6


def test_image_keys_recognise_one_flickr_photo_under_different_names():
    assert image_key("1000269685_e60e9cdfb4_1125_78841376@N00.jpg") == image_key("ab/cd/1000269685.jpg") == \
        image_key("1000269685") == "1000269685"
    assert image_key("2023/IMG_0001.JPG") != image_key("2024/IMG_0001.JPG")


def _collapsed_checkpoint(source, target) -> None:
    """A checkpoint whose every head answers one class, whatever the photo."""
    state = torch.load(source, map_location="cpu", weights_only=True)
    for key, value in state["model"].items():
        if key.startswith("heads.") and key.endswith(".bias"):
            value.zero_()
            value[0] = 50.0
    torch.save(state, target)


def test_collapse_is_warned_about_by_export_and_evaluate(bursts, tmp_path, capsys, tiny_bundle):
    from predictor import registry

    run = tmp_path / "run"
    _train(bursts, run, "--val-fraction", "0.25")
    _collapsed_checkpoint(run / "best.pt", tmp_path / "collapsed.pt")
    bundle = tmp_path / "collapsed"
    call_command("export_bundle", "--checkpoint", str(tmp_path / "collapsed.pt"), "--name", "collapsed", "--output",
                 str(bundle), "--scene-model", str(tiny_bundle), "--test", "bursts-test", str(bursts["test_meta"]),
                 str(bursts["test_images"]), "--device", "cpu", verbosity=0)
    captured = capsys.readouterr()
    assert ("warning (prediction spread and calibration, on the card): bursts-test: predictions collapse: 24 of 24 "
            "photos (100.0 %) get the same cell") in captured.err
    card = (bundle / "MODEL_CARD.md").read_text()
    assert "- bursts-test: distinct predicted cells: 1 for 24 photos; the most common takes 100.0 %" in card
    assert "WARNING: bursts-test: predictions collapse: 24 of 24 photos (100.0 %) get the same cell" in card

    registry.install_bundle(bundle, activate=False)
    meta = _with_s3_label(bursts["test_meta"], tmp_path / "test_meta.csv")
    call_command("evaluate", "--meta", str(meta), "--images", str(bursts["test_images"]), "--model", "collapsed",
                 "--device", "cpu")
    printed = capsys.readouterr().out
    assert "distinct predicted cells: 1 for 24 photos" in printed
    assert "WARNING: predictions collapse: 24 of 24 photos" in printed


def test_calibration_error_and_selective_accuracy_are_computed_as_stated():
    far, near = 5000.0, 1.0
    # Confidence 0.95 on photos that are all far away: overconfident by 0.95.
    spread = PredictionSpread.of([1.0] * 10, [2.0] * 10, [far] * 10, [0.95] * 10)
    assert spread.ece == pytest.approx(0.95) and spread.collapsed and spread.distinct_cells == 1
    # Half the photos at 0.9 (9 of 10 near), half at 0.1 (1 of 10 near): perfectly calibrated.
    distances = [near] * 9 + [far] + [near] + [far] * 9
    confidence = [0.9] * 10 + [0.1] * 10
    lats = np.arange(20.0)
    spread = PredictionSpread.of(lats, lats, distances, confidence)
    assert spread.ece == pytest.approx(0.0, abs=1e-12) and not spread.collapsed and spread.distinct_cells == 20
    assert spread.selective == {1.0: pytest.approx(0.5), 0.5: pytest.approx(0.9), 0.25: pytest.approx(1.0)}
    assert math.isclose(spread.within_radius, 0.5)


def test_the_published_isn_results_do_not_collapse(shared_data):
    from predictor.ml import evaluation

    results = shared_data / "geoestimation" / "results_im2gps3k" / "ISNs_M-fstar-S3.csv"
    report = evaluation.evaluate(evaluation.read_results(results), name="ISNs")
    assert report.spread.distinct_cells == 1965 and report.spread.images == 2997
    assert report.spread.top_share < 0.01 and not report.spread.collapsed and report.spread.ece is None
    assert "distinct predicted cells: 1965 for 2997 photos" in evaluation.format_table(report)


def test_resume_says_what_it_does_and_refuses_another_network_or_other_cells(bursts, tmp_path, capsys):
    run = tmp_path / "run"
    _train(bursts, run, "--val-fraction", "0.25")
    capsys.readouterr()
    _train(bursts, run, "--val-fraction", "0.25", "--resume", "auto", "--epochs", "2")
    assert f"resumed from epoch 1 ({run / 'last.pt'}): training epochs 2 to 2" in capsys.readouterr().out
    _train(bursts, run, "--val-fraction", "0.25", "--resume", "auto", "--epochs", "2")
    printed = capsys.readouterr().out
    assert "has already completed 2 of 2 epochs: nothing to train. Raise --epochs to train longer." in printed
    assert "epoch 2: train loss" in printed  # the run's last figures, not silence
    with pytest.raises(CommandError, match="was trained with backbone 'tiny', and this run asks for 'resnet18'"):
        call_command("train", "--train-shards", str(bursts["shards"]), "--partitionings", *bursts["cells"],
                     "--output", str(run), "--backbone", "resnet18", "--resume", "auto", "--epochs", "3",
                     "--val-fraction", "0.25", "--no-progress", "--device", "cpu")
    with pytest.raises(CommandError, match=r"was trained on partitionings of \d+/\d+/\d+ cells and the files given "
                                           r"have \d+/\d+ cells"):
        _train(bursts, run, "--val-fraction", "0.25", "--resume", "auto", "--epochs", "3",
               "--partitionings", *bursts["cells"][:2])
    assert load_checkpoint(run / "last.pt")["epoch"] == 2


def test_empty_sets_stop_with_a_sentence_and_a_non_zero_exit(bursts, tmp_path, capsys):
    with pytest.raises(CommandError, match="left no image on the validation side"):
        _train(bursts, tmp_path / "run", "--val-fraction", "0.0001", "--val-split-by", "author")
    with pytest.raises(CommandError, match="training needs a validation set"):
        _train(bursts, tmp_path / "run")
    far = tmp_path / "far.csv"
    far.write_text("IMG_ID,LAT,LON\nb5-00000.jpg,-80.0,0.0\n")  # a photo outside every cell
    with pytest.raises(CommandError, match="no photo was written: every photo fell outside the partitionings' cells"):
        call_command("preprocess_images", "--source", "csv", "--metadata", str(far), "--images",
                     str(bursts["root"] / "photos" / "images"), "--output", str(tmp_path / "far"),
                     "--partitionings", *bursts["cells"], verbosity=0)
    printed = capsys.readouterr().out
    assert "train: 0 images in 0 shards, nothing written" in printed and "nan" not in printed
    with pytest.raises(CommandError, match="the validation set is empty: --val-fraction 0.0001 held out no photo"):
        call_command("preprocess_images", "--source", "csv", "--metadata", str(bursts["metadata"]), "--images",
                     str(bursts["root"] / "photos" / "images"), "--output", str(tmp_path / "tiny-val"),
                     "--val-fraction", "0.0001", verbosity=0)
    # An empty validation folder given to train is refused before any training.
    from predictor.ml.train.shards import ShardWriter
    ShardWriter(tmp_path / "empty-val").close()
    with pytest.raises(CommandError, match="the validation set is empty: .* holds no image"):
        _train(bursts, tmp_path / "run2", "--val-shards", str(tmp_path / "empty-val"))
    assert not (tmp_path / "run2" / "last.pt").exists()


MODEL_COMMANDS = ("predict", "evaluate", "train", "export_bundle", "import_checkpoint", "label_scenes")


def test_one_device_flag_across_the_model_commands(tiny_bundle, tmp_path):
    from django.core.management import load_command_class

    for name in MODEL_COMMANDS:
        parser = load_command_class("predictor", name).create_parser("manage.py", name)
        options = {option for action in parser._actions for option in action.option_strings}
        assert "--device" in options and "--cpu" not in options, name
    photo = tmp_path / "photo.jpg"
    from PIL import Image
    Image.new("RGB", (64, 48), (10, 120, 200)).save(photo)
    with pytest.raises(CommandError, match="unrecognized arguments: --cpu"):
        call_command("predict", str(photo), "--model", str(tiny_bundle), "--cpu")
    if not torch.cuda.is_available():
        with pytest.raises(CommandError, match="--device cuda: CUDA was requested but no GPU is available"):
            call_command("predict", str(photo), "--model", str(tiny_bundle), "--device", "cuda")


def test_progress_bars_for_training_steps_and_the_exports_test_evaluation(bursts, tmp_path, capsys, tiny_bundle):
    call_command("train", "--train-shards", str(bursts["shards"]), "--partitionings", *bursts["cells"], "--output",
                 str(tmp_path / "run"), "--backbone", "tiny", "--epochs", "1", "--batch-size", "16",
                 "--crop-size", "32", "--workers", "0", "--device", "cpu", "--val-fraction", "0.25")
    steps = load_checkpoint(tmp_path / "run" / "last.pt")["history"][-1]["train_images"] // 16
    bar = capsys.readouterr().err
    assert bar.count("loss=") >= steps >= 8  # the loss on the bar is refreshed at every step
    call_command("export_bundle", "--checkpoint", str(tmp_path / "run" / "last.pt"), "--name", "progress",
                 "--output", str(tmp_path / "bundle"), "--scene-model", str(tiny_bundle), "--test", "bursts-test",
                 str(bursts["test_meta"]), str(bursts["test_images"]), "--device", "cpu")
    err = capsys.readouterr().err
    assert "test bursts-test: 100%" in err and "24/24" in err


def test_an_untrained_scene_classifier_is_named_on_the_card_and_warned_about_by_predict(bursts, tmp_path, capsys,
                                                                                       tiny_bundle):
    from predictor.ml.engine import InferenceEngine
    from predictor.ml.isn import save_model
    from predictor.ml.kinds import load_bundle

    _train(bursts, tmp_path / "run", "--val-fraction", "0.25")
    bundle = tmp_path / "bundle"
    call_command("export_bundle", "--checkpoint", str(tmp_path / "run" / "last.pt"), "--name", "trained-geo",
                 "--output", str(bundle), "--scene-model", str(tiny_bundle), "--device", "cpu", verbosity=0)
    card = (bundle / "MODEL_CARD.md").read_text()
    assert "- Scene classifier: UNTRAINED (scene classifier copied from bundle 'tiny-untrained', whose scene " \
           "classifier has random weights)" in card
    model = load_bundle(bundle)
    assert not model.untrained and model.scene_untrained
    # Saving the loaded model again (isn.save_model) keeps its training record and the scene flag.
    again = load_bundle(save_model(tmp_path / "again", model))
    assert again.scene_untrained and not again.untrained and again.config["training"] == model.config["training"]
    with InferenceEngine(model, max_batch_size=2) as engine:
        prediction = engine.predict_many([next(bursts["test_images"].glob("*.jpg"))])[0]
    assert prediction.scene_untrained and not prediction.untrained
    capsys.readouterr()
    call_command("predict", str(bursts["test_images"]), "--model", str(bundle), "--device", "cpu")
    captured = capsys.readouterr()
    assert "the scene classifier is UNTRAINED (random weights), so the scene shown means nothing; the geolocation " \
           "networks are trained" in captured.err
    assert "24 predicted, 0 failed" in captured.out


def test_own_geotagged_folder_to_cells_and_a_trained_run_without_any_outside_file(shared_data, tmp_path, capsys):
    """The docs' third path: EXIF GPS photos -> shards -> cells built from the shards -> training."""
    call_command("preprocess_images", "--source", "exif", "--images", str(shared_data / "exif-gps-samples" / "images"),
                 "--output", str(tmp_path / "shards"), verbosity=0)
    assert "train: 20 images" in capsys.readouterr().out  # 21 photos, one of 1x1 px
    call_command("build_partitions", "--coords", str(tmp_path / "shards" / "train"), "--hierarchy", "--tau-min", "1",
                 "--tau-max", "8", "4", "2", "--out-dir", str(tmp_path / "cells"), verbosity=0)
    assert "20 coordinates from" in capsys.readouterr().out
    cells = [str(tmp_path / "cells" / f"cells_1_{t}.csv") for t in (8, 4, 2)]
    call_command("train", "--train-shards", str(tmp_path / "shards" / "train"), "--partitionings", *cells,
                 "--output", str(tmp_path / "run"), "--backbone", "tiny", "--epochs", "1", "--batch-size", "8",
                 "--crop-size", "32", "--workers", "0", "--no-progress", "--device", "cpu", "--val-fraction", "0.3",
                 "--val-split-by", "place", "--val-place-level", "6")
    validation = load_checkpoint(tmp_path / "run" / "last.pt")["validation"]
    assert validation["split"] == {"by": "place", "fraction": 0.3, "place_level": 6}
    assert validation["overlap"]["evaluated"] > 0 and validation["overlap"]["shared_ids"] == 0

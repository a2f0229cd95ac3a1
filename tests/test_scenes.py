"""GeoWeb's Places365 -> S3 mapping: the shipped file, its agreement with the paper's labels, and the API."""
from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from predictor.ml.scenes import DEFAULT_CSV, SceneMapping, human_name

REPO = Path(__file__).resolve().parents[1]


def agreement(mapping: SceneMapping, meta_csv: Path) -> float:
    """Share of images whose one-hot Places365 label, mapped to S3, has the paper's S3_Label as argmax."""
    with meta_csv.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    one_hot = np.zeros((len(rows), 365), dtype=np.float32)
    one_hot[np.arange(len(rows)), [int(r["S365_Label"]) for r in rows]] = 1
    predicted = mapping.s3_probabilities(one_hot).argmax(axis=1)
    return float(np.mean(predicted == np.array([int(r["S3_Label"]) for r in rows])))


def test_shipped_mapping_is_a_valid_365x3_matrix():
    mapping = SceneMapping.load_default()
    assert mapping.matrix.shape == (365, 3) and mapping.matrix.dtype == np.float32
    assert np.allclose(mapping.matrix.sum(axis=1), 1.0)
    assert mapping.categories[2] == "/a/airport_terminal" and mapping.labels[2] == "airport terminal"
    assert mapping.labels[71] == "bus station (indoor)"
    assert len(set(mapping.labels)) == 365


def test_mapping_agrees_with_the_paper_labels_on_im2gps3k_and_im2gps(shared_data):
    mapping = SceneMapping.load_default()
    assert agreement(mapping, shared_data / "geoestimation" / "im2gps3k_places365.csv") >= 0.90
    assert agreement(mapping, shared_data / "geoestimation" / "im2gps_places365.csv") >= 0.90


def test_indoor_outdoor_follows_places365_except_the_documented_corrections(shared_data):
    mapping = SceneMapping.load_default()
    io = [int(line.split()[1]) for line in (shared_data / "places365" / "IO_places365.txt").read_text().splitlines()]
    corrected = {"/s/swimming_hole", "/a/archaelogical_excavation", "/b/bus_station/indoor", "/t/ticket_booth"}
    for category, row, flag in zip(mapping.categories, mapping.matrix, io):
        if category in corrected:
            continue
        assert (row[0] == 1.0) == (flag == 1), category


def test_committed_csv_is_what_the_build_script_produces(shared_data, tmp_path):
    out = tmp_path / "s3.csv"
    subprocess.run([sys.executable, str(REPO / "predictor/data/build_places365_s3.py"), "--io",
                    str(shared_data / "places365" / "IO_places365.txt"), "--out", str(out)],
                   check=True, capture_output=True)
    assert out.read_bytes() == DEFAULT_CSV.read_bytes()


def test_s3_probabilities_for_numpy_and_torch_batches():
    mapping = SceneMapping.load_default()
    rng = np.random.default_rng(0)
    p365 = rng.dirichlet(np.ones(365), size=4).astype(np.float32)
    s3 = mapping.s3_probabilities(p365)
    assert s3.shape == (4, 3) and np.allclose(s3.sum(axis=1), 1.0, atol=1e-5)
    s3_torch = mapping.s3_probabilities(torch.from_numpy(p365))
    assert isinstance(s3_torch, torch.Tensor) and torch.allclose(s3_torch, torch.from_numpy(s3), atol=1e-6)
    assert mapping.s3_probabilities(p365[0]).shape == (3,)


def test_concept_names_the_winning_scene():
    mapping = SceneMapping.load_default()
    beach, airport_terminal = 48, 2
    p = np.zeros((2, 365), dtype=np.float32)
    p[0, beach] = 0.7
    p[0, airport_terminal] = 0.3
    p[1, airport_terminal] = 1.0
    assert mapping.concept(p) == ["natural", "indoor"]
    assert mapping.concept(torch.from_numpy(p[1])) == "indoor"
    assert mapping.top_categories(p[0], k=2) == [("beach", pytest.approx(0.7)), ("airport terminal",
                                                                                 pytest.approx(0.3))]


def test_wrong_input_shapes_and_broken_files_give_clear_errors(tmp_path):
    mapping = SceneMapping.load_default()
    with pytest.raises(ValueError, match="365 Places365 probabilities"):
        mapping.s3_probabilities(np.ones((2, 16)))
    broken = tmp_path / "broken.csv"
    text = DEFAULT_CSV.read_text().splitlines()
    text[5] = text[5].rsplit(",", 1)[0] + ",0.5"  # row no longer sums to 1
    broken.write_text("\n".join(text))
    with pytest.raises(ValueError, match="sum to 1"):
        SceneMapping.from_csv(broken)
    broken.write_text("idx,name\n0,x\n")
    with pytest.raises(ValueError, match="expected header"):
        SceneMapping.from_csv(broken)


def test_human_names():
    assert human_name("/a/airport_terminal") == "airport terminal"
    assert human_name("/u/underwater/ocean_deep") == "underwater (ocean deep)"

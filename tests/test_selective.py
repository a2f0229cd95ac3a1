"""Selective prediction in evaluation (predictor.ml.selective, `evaluate --selective`): accuracy of the localizable
and non-localizable images, and the accuracy-coverage curve as CSV and PNG, for any model."""
from __future__ import annotations

import csv

import numpy as np
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from predictor.ml.selective import selective_report, write_selective


def test_the_curve_rewards_a_score_that_knows_which_answers_are_right(tmp_path):
    distances = np.array([0.5, 10, 20, 3000, 5000, 8000, 15, 9000])
    informed = np.array([0.9, 0.8, 0.7, 0.1, 0.2, 0.05, 0.75, 0.0])  # high exactly where the answer is close
    blind = np.array([0.0, 0.1, 0.2, 0.9, 0.8, 0.7, 0.3, 1.0])  # the reverse
    report = selective_report(name="toy", distances_km=distances, localizable=informed > 0.5,
                              scores={"informed": informed, "blind": blind}, coverage_points=4)
    by = {name: {round(r["coverage"], 2): r for r in rows} for name, rows in report.curves.items()}
    assert by["informed"][0.5]["acc25km"] == 1.0 and by["blind"][0.5]["acc25km"] == 0.0
    assert by["informed"][1.0]["acc25km"] == by["blind"][1.0]["acc25km"] == 0.5  # full coverage: everyone
    assert report.split(True)["images"] == 4 and report.split(True)["acc25km"] == 1.0
    assert report.split(False)["acc25km"] == 0.0
    paths = write_selective(report, tmp_path)
    rows = list(csv.reader(paths["selective_csv"].open()))
    assert rows[0][:4] == ["score", "coverage", "images", "min_score"] and len(rows) == 1 + 8 + 2
    assert paths["selective_png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluate_selective_for_an_isn_bundle_uses_max_probability_and_entropy(tiny_bundle, tmp_path, capsys):
    from tests.conftest import make_jpeg

    images = tmp_path / "images"
    images.mkdir()
    meta = tmp_path / "meta.csv"
    rows = [("a.jpg", 48.85, 2.35), ("b.jpg", -33.9, 151.2), ("c.jpg", 40.7, -74.0), ("d.jpg", 35.7, 139.7)]
    meta.write_text("IMG_ID,AUTHOR,LAT,LON,S3_Label\n" + "".join(f"{i},x,{a},{b},2\n" for i, a, b in rows))
    for (i, *_), colour in zip(rows, [(200, 30, 30), (30, 200, 30), (30, 30, 200), (90, 90, 90)]):
        (images / i).write_bytes(make_jpeg(96, 64, colour))
    call_command("evaluate", "--meta", str(meta), "--images", str(images), "--model", str(tiny_bundle),
                 "--batch-size", "2", "--out", str(tmp_path / "out"), "--selective", "--conf-thres", "0.0")
    out = capsys.readouterr().out
    assert "localizable: 4 images (100.0%)" in out and "non-localizable: 0 images (0.0%)" in out
    table = list(csv.DictReader((tmp_path / "out" / "tiny-untrained_selective.csv").open()))
    assert {r["score"] for r in table} >= {"max probability of f*", "negative entropy of f*"}
    assert (tmp_path / "out" / "tiny-untrained_selective.png").stat().st_size > 1000
    with pytest.raises(CommandError, match="--selective needs --images"):
        call_command("evaluate", "--meta", str(meta), "--predictions", str(meta), "--selective")

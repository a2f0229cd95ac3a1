"""Evaluation: the published accuracy tables are reproduced exactly from the released per-image results."""
from __future__ import annotations

import json

import numpy as np
import pytest
from django.core.management import CommandError, call_command
from PIL import Image

from predictor.ml import evaluation

# geoestimation-facts.md §f, "Accuracies recomputed from the per-image CSVs":
# accuracy (%) at 1/25/200/750/2500 km, mean km, median km.
PUBLISHED = {
    ("im2gps", "ISNs_M-fstar-S3"): ([16.9, 43.0, 51.9, 66.7, 80.2], 1732.9, 144.6),
    ("im2gps", "base_M-fstar"): ([15.2, 40.9, 51.5, 65.4, 78.5], 1905.3, 164.2),
    ("im2gps", "base_M-m"): ([13.5, 35.0, 49.8, 64.1, 79.7], 1827.8, 212.0),
    ("im2gps", "base_L-m"): ([13.5, 36.3, 50.6, 64.1, 79.7], 1999.4, 170.8),
    ("im2gps", "base-vgg_L-m"): ([8.9, 26.6, 36.7, 50.6, 65.8], 3342.1, 724.9),
    ("im2gps", "base-vgg-c_L-m"): ([7.6, 22.8, 35.0, 50.6, 66.7], 3356.8, 740.6),
    ("im2gps3k", "ISNs_M-fstar-S3"): ([10.5, 28.0, 36.6, 49.7, 66.0], 3223.1, 785.5),
    ("im2gps3k", "base_M-fstar"): ([9.7, 27.0, 35.6, 49.1, 66.0], 3278.0, 838.6),
    ("im2gps3k", "base_M-m"): ([8.2, 25.5, 35.1, 48.7, 65.2], 3292.1, 845.8),
    ("im2gps3k", "base_L-m"): ([8.3, 24.9, 34.0, 48.8, 65.8], 3211.1, 856.1),
    ("im2gps3k", "base-vgg_L-m"): ([4.8, 16.5, 22.6, 34.5, 54.4], 4293.7, 1927.0),
    ("im2gps3k", "base-vgg-c_L-m"): ([4.2, 14.6, 22.2, 34.4, 54.2], 4296.4, 1907.4),
}
HEADER = "img_id,gt_lat,predicted_lat,gt_long,predicted_long,great_circle_distance"
SUMMARY = ("street acc (1km),city acc (25km),region acc (200km),country acc (750km),continent acc (2500km),"
           "mean deviation (km)")


def paths(shared_data, test_set: str, model: str):
    base = shared_data / "geoestimation"
    return base / f"results_{test_set}" / f"{model}.csv", base / f"{test_set}_places365.csv"


@pytest.mark.parametrize(("test_set", "model"), sorted(PUBLISHED))
def test_published_tables_are_reproduced_exactly(shared_data, test_set, model):
    results, meta = paths(shared_data, test_set, model)
    report = evaluation.evaluate(evaluation.read_results(results), name=model, meta=evaluation.read_meta(meta))
    accuracy, mean_km, median_km = PUBLISHED[(test_set, model)]
    assert report.overall.images == (237 if test_set == "im2gps" else 2997)
    assert report.overall.percentages() == accuracy
    assert round(report.overall.mean_km, 1) == mean_km
    assert round(report.overall.median_km, 1) == median_km
    assert report.stored_summary_matches is True
    assert report.stored_distance_mismatches == 0


def test_per_scene_breakdown_on_im2gps3k(shared_data):
    at_1km = {}
    for model in ("ISNs_M-fstar-S3", "base_M-fstar"):
        results, meta = paths(shared_data, "im2gps3k", model)
        report = evaluation.evaluate(evaluation.read_results(results), name=model, meta=evaluation.read_meta(meta))
        assert [report.by_concept[c].images for c in ("indoor", "natural", "urban")] == [545, 845, 1607]
        at_1km[model] = [report.by_concept[c].percentages()[0] for c in ("indoor", "natural", "urban")]
    assert at_1km == {"ISNs_M-fstar-S3": [9.2, 3.9, 14.5], "base_M-fstar": [7.9, 3.3, 13.8]}


def test_written_results_file_reads_back_with_the_same_table(shared_data):
    results, meta = paths(shared_data, "im2gps", "ISNs_M-fstar-S3")
    original = evaluation.read_results(results)
    again = evaluation.parse_results(evaluation.format_results(original))
    assert again.img_ids == original.img_ids
    report = evaluation.evaluate(again, name="again")
    assert report.overall.percentages() == [16.9, 43.0, 51.9, 66.7, 80.2]
    assert report.stored_summary_matches is True and report.stored_distance_mismatches == 0


def test_report_files_csv_json_and_plot(shared_data, tmp_path):
    results, meta = paths(shared_data, "im2gps3k", "ISNs_M-fstar-S3")
    report = evaluation.evaluate(evaluation.read_results(results), name="ISNs", meta=evaluation.read_meta(meta))
    written = evaluation.write_report(report, tmp_path / "out")
    lines = written["csv"].read_text().splitlines()
    assert lines[0].startswith("group,images,acc_1km") and lines[1].startswith("all,2997,0.105439")
    assert [line.split(",")[0] for line in lines[1:]] == ["all", "indoor", "natural", "urban"]
    data = json.loads(written["json"].read_text())
    assert data["rows"][0]["accuracy_percent"] == {"1": 10.5, "25": 28.0, "200": 36.6, "750": 49.7, "2500": 66.0}
    with Image.open(written["png"]) as image:
        assert image.format == "PNG" and image.width > 300
        # the four curves draw in colour: the plot is not blank
        assert len(set(image.convert("RGB").getdata())) > 20


def write(tmp_path, text: str):
    path = tmp_path / "results.csv"
    path.write_text(text)
    return path


GOOD_ROW = "a.jpg,48.85,48.86,2.35,2.35,1.11"


@pytest.mark.parametrize(("text", "message"), [
    ("", "expected the header"),
    ("img_id,lat,lon\n" + GOOD_ROW, "expected the header"),
    (HEADER + "\n", "no result rows"),
    (HEADER + "\na.jpg,48.85,48.86,2.35,2.35", r":2: expected 6 columns, got 5"),
    (HEADER + f"\n{GOOD_ROW}\nb.jpg,48.85,north,2.35,2.35,1.0", r":3: non-numeric value"),
    (HEADER + f"\n{GOOD_ROW}\n{GOOD_ROW}", r":3: img_id 'a.jpg' repeats line 2"),
    (HEADER + "\na.jpg,148.85,48.86,2.35,2.35,1.11", "coordinates out of range"),
    (HEADER + "\na.jpg,nan,48.86,2.35,2.35,1.11", "non-finite"),
    (HEADER + f"\n{GOOD_ROW}\n\nsomething else\n1,2,3", r":4: after the blank line expected the summary header"),
    (HEADER + f"\n{GOOD_ROW}\n\n{SUMMARY}\n1,1,1,1,1,1.11\n2,2,2,2,2,2", "exactly one summary row"),
    (HEADER + f"\n{GOOD_ROW}\n\n{SUMMARY}\n1,1,1,1,1", "expected 6 summary values"),
])
def test_malformed_results_files_give_clear_errors(tmp_path, text, message):
    with pytest.raises(evaluation.ResultsFormatError, match=message):
        evaluation.read_results(write(tmp_path, text))


def test_results_without_summary_are_accepted_and_wrong_stored_distances_flagged(tmp_path):
    predictions = evaluation.read_results(write(tmp_path, HEADER + "\na.jpg,48.85,48.86,2.35,2.35,5000\n"))
    report = evaluation.evaluate(predictions, name="x")
    assert report.stored_summary_matches is None
    assert report.stored_distance_mismatches == 1
    assert "1 stored distances disagree" in evaluation.format_table(report)
    assert report.overall.accuracy[25.0] == 1.0  # the recomputed 1.11 km is used, not the stored 5000


def test_images_missing_from_meta_are_named(shared_data, tmp_path):
    predictions = evaluation.read_results(write(tmp_path, HEADER + f"\n{GOOD_ROW}\n"))
    meta = evaluation.read_meta(shared_data / "geoestimation" / "im2gps_places365.csv")
    with pytest.raises(evaluation.ResultsFormatError, match=r"1 of 1 images are not in the meta file.*a\.jpg"):
        evaluation.evaluate(predictions, name="x", meta=meta)


def test_evaluate_command_prints_the_table_and_writes_reports(shared_data, tmp_path, capsys):
    results, meta = paths(shared_data, "im2gps3k", "ISNs_M-fstar-S3")
    call_command("evaluate", "--meta", str(meta), "--predictions", str(results), "--out", str(tmp_path))
    out = capsys.readouterr().out
    table = {line.split()[0]: line.split()[1:] for line in out.splitlines()[2:6]}
    assert table["all"] == ["2997", "10.5", "28.0", "36.6", "49.7", "66.0", "3223.1", "785.5"]
    assert table["indoor"][:2] == ["545", "9.2"] and table["urban"][:2] == ["1607", "14.5"]
    assert (tmp_path / "ISNs_M-fstar-S3_accuracy.png").is_file()
    assert (tmp_path / "ISNs_M-fstar-S3_accuracy.json").is_file()


def test_evaluate_command_rejects_a_malformed_file(shared_data, tmp_path):
    meta = shared_data / "geoestimation" / "im2gps_places365.csv"
    bad = write(tmp_path, HEADER + "\na.jpg,48.85,48.86\n")
    with pytest.raises(CommandError, match="expected 6 columns"):
        call_command("evaluate", "--meta", str(meta), "--predictions", str(bad))
    with pytest.raises(CommandError, match="file not found"):
        call_command("evaluate", "--meta", str(meta), "--predictions", str(tmp_path / "missing.csv"))


def test_distances_use_the_haversine_of_the_paper():
    predictions = evaluation.ImagePredictions(img_ids=["x"], gt_lat=[0.0], gt_lon=[0.0], pred_lat=[0.0],
                                              pred_lon=[1.0])
    assert np.isclose(predictions.distances_km[0], 2 * np.pi * 6371 / 360)


def test_evaluate_command_runs_a_bundle_over_a_folder_of_images(tiny_bundle, tmp_path, capsys):
    from predictor.ml.kinds import load_bundle
    from tests.conftest import make_jpeg

    images = tmp_path / "images"
    images.mkdir()
    meta = tmp_path / "meta.csv"
    rows = [("a.jpg", 48.85, 2.35, 2), ("b.jpg", -33.9, 151.2, 1), ("c.jpg", 40.7, -74.0, 0),
            ("broken.jpg", 0.0, 0.0, 1), ("missing.jpg", 10.0, 10.0, 2)]
    meta.write_text("IMG_ID,AUTHOR,LAT,LON,S3_Label\n" + "".join(f"{i},x,{a},{b},{s}\n" for i, a, b, s in rows))
    for i, colour in zip(("a.jpg", "b.jpg", "c.jpg"), [(200, 30, 30), (30, 200, 30), (30, 30, 200)]):
        (images / i).write_bytes(make_jpeg(96, 64, colour))
    (images / "broken.jpg").write_bytes(b"not a jpeg at all")

    call_command("evaluate", "--meta", str(meta), "--images", str(images), "--model", str(tiny_bundle),
                 "--batch-size", "2", "--out", str(tmp_path / "out"))
    captured = capsys.readouterr()
    table = {line.split()[0]: line.split()[1:] for line in captured.out.splitlines()[2:6]}
    assert table["all"][0] == "3" and table["indoor"][0] == "1" and table["natural"][0] == "1"
    assert "skipped 2 of 5" in captured.err and "broken.jpg" in captured.err and "missing.jpg" in captured.err
    assert "untrained" in captured.err

    model = load_bundle(tiny_bundle)
    written = evaluation.read_results(next((tmp_path / "out").glob("*_results.csv")))
    assert written.img_ids == ["a.jpg", "b.jpg", "c.jpg"]
    fine = model.partitionings[-1]
    for lat, lon in zip(written.pred_lat, written.pred_lon):  # every estimate is a fine cell's mean coordinate
        assert np.min(np.hypot(fine.lat - lat, fine.lon - lon)) < 1e-5
    assert written.gt_lat.tolist() == [48.85, -33.9, 40.7]


def test_evaluate_command_names_an_unknown_model(shared_data, tmp_path):
    with pytest.raises(CommandError, match="neither an installed bundle"):
        call_command("evaluate", "--meta", str(shared_data / "geoestimation" / "im2gps_places365.csv"),
                     "--images", str(tmp_path), "--model", "no-such-model")

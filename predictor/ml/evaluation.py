"""Evaluate geolocation results: read and write the paper's per-image results files, accuracy tables, plots,
and how the predictions spread (distinct cells, collapse) and how well their confidence is calibrated.

Files are read by core.im2gps, the one reader of the Im2GPS formats (the game import uses it too); this module
is its strict user: a file with any bad row is refused. Results format (as published with the paper): header `img_id,gt_lat,predicted_lat,gt_long,predicted_long,
great_circle_distance`, one row per image, then a blank line, a summary header and one summary row (accuracy
fractions at 1/25/200/750/2500 km and the mean distance in km). Distances are recomputed, never trusted.
"""
from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core import im2gps
from predictor.ml.geodesy import ACCURACY_THRESHOLDS_KM, THRESHOLD_NAMES, great_circle_km
from predictor.ml.prediction import S3_CONCEPTS

RESULTS_HEADER = im2gps.RESULTS_HEADER
SUMMARY_HEADER = im2gps.SUMMARY_HEADER
# The published files store distances to 2 decimals; recomputation agrees within 0.005 km, so more than this
# means the file's coordinates and distances do not belong together.
STORED_DISTANCE_TOLERANCE_KM = 0.01
# A prediction is a cell's mean coordinate, so distinct predicted points are distinct cells.
POINT_DECIMALS = 5
# Collapse: one predicted cell takes at least this share of the photos (checked from this many photos on).
COLLAPSE_SHARE = 0.5
COLLAPSE_MIN_IMAGES = 10
# The confidence is the probability mass within 25 km of the estimate (Prediction.confidence): it is calibrated
# when that share of the photos lies within 25 km.
CONFIDENCE_RADIUS_KM = 25.0
CALIBRATION_BINS = 10
SELECTIVE_COVERAGES = (1.0, 0.5, 0.25)


class ResultsFormatError(ValueError):
    """A results or meta file that does not follow the expected format; the message names file and line."""


@dataclass
class ImagePredictions:
    """Predicted and true coordinates of a set of test images (one row per image)."""

    img_ids: list[str]
    gt_lat: np.ndarray
    gt_lon: np.ndarray
    pred_lat: np.ndarray
    pred_lon: np.ndarray
    stored_km: np.ndarray | None = None  # the file's own distance column, if read from a file
    stored_summary: list[float] | None = None  # the file's own summary row, if present
    confidence: np.ndarray | None = None  # the model's confidence per image (0..1), when it was run here

    def __post_init__(self):
        for name in ("gt_lat", "gt_lon", "pred_lat", "pred_lon"):
            setattr(self, name, np.asarray(getattr(self, name), dtype=np.float64))
        if not (len(self.img_ids) == len(self.gt_lat) == len(self.gt_lon) == len(self.pred_lat)
                == len(self.pred_lon)):
            raise ValueError("img_ids and coordinate arrays have different lengths")

    def __len__(self) -> int:
        return len(self.img_ids)

    @property
    def distances_km(self) -> np.ndarray:
        return np.atleast_1d(great_circle_km(self.gt_lat, self.gt_lon, self.pred_lat, self.pred_lon))


@dataclass
class MetaRecord:
    lat: float
    lon: float
    concept: str  # one of S3_CONCEPTS


@dataclass
class AccuracyRow:
    """Accuracy at each threshold (fractions 0..1), mean and median error for one group of images."""

    group: str
    images: int
    accuracy: dict[float, float]
    mean_km: float
    median_km: float

    @classmethod
    def of(cls, group: str, distances_km: np.ndarray) -> "AccuracyRow":
        d = np.asarray(distances_km, dtype=np.float64)
        if d.size == 0:
            return cls(group, 0, {t: math.nan for t in ACCURACY_THRESHOLDS_KM}, math.nan, math.nan)
        return cls(group=group, images=int(d.size),
                   accuracy={t: float(np.mean(d <= t)) for t in ACCURACY_THRESHOLDS_KM},
                   mean_km=float(d.mean()), median_km=float(np.median(d)))

    def percentages(self) -> list[float]:
        """Accuracies as percentages rounded to 1 decimal, the way papers print them."""
        return [round(100 * self.accuracy[t], 1) for t in ACCURACY_THRESHOLDS_KM]


@dataclass
class PredictionSpread:
    """How many places a model answers with, and whether its confidence means what it says.

    `ece` is the expected calibration error of the confidence against "the true location is within 25 km" (equal
    width bins); `selective` maps a coverage (the most confident share of the photos) to their accuracy at 25 km.
    """

    images: int
    distinct_cells: int
    top_share: float  # share of the photos given the most common prediction
    top_point: tuple[float, float]
    ece: float | None = None
    mean_confidence: float | None = None
    within_radius: float | None = None  # share of the photos within CONFIDENCE_RADIUS_KM
    selective: dict[float, float] = field(default_factory=dict)

    @classmethod
    def of(cls, pred_lat, pred_lon, distances_km, confidence=None) -> "PredictionSpread":
        points = np.round(np.stack([np.asarray(pred_lat, dtype=np.float64), np.asarray(pred_lon, dtype=np.float64)],
                                   axis=1), POINT_DECIMALS)
        d = np.asarray(distances_km, dtype=np.float64)
        if len(points) == 0:
            return cls(images=0, distinct_cells=0, top_share=math.nan, top_point=(math.nan, math.nan))
        unique, counts = np.unique(points, axis=0, return_counts=True)
        top = int(np.argmax(counts))
        spread = cls(images=len(points), distinct_cells=len(unique), top_share=float(counts[top] / len(points)),
                     top_point=(float(unique[top][0]), float(unique[top][1])))
        if confidence is not None:
            c = np.clip(np.asarray(confidence, dtype=np.float64), 0.0, 1.0)
            hit = (d <= CONFIDENCE_RADIUS_KM).astype(np.float64)
            bins = np.minimum((c * CALIBRATION_BINS).astype(int), CALIBRATION_BINS - 1)
            spread.ece = float(sum(abs(hit[bins == b].mean() - c[bins == b].mean()) * np.sum(bins == b)
                                   for b in range(CALIBRATION_BINS) if np.any(bins == b)) / len(c))
            spread.mean_confidence = float(c.mean())
            spread.within_radius = float(hit.mean())
            order = np.argsort(-c, kind="stable")
            for coverage in SELECTIVE_COVERAGES:
                kept = order[:max(1, int(math.ceil(coverage * len(c))))]
                spread.selective[coverage] = float(hit[kept].mean())
        return spread

    @property
    def collapsed(self) -> bool:
        return self.images >= COLLAPSE_MIN_IMAGES and self.top_share >= COLLAPSE_SHARE

    def warning(self) -> str | None:
        if not self.collapsed:
            return None
        return (f"predictions collapse: {round(self.top_share * self.images)} of {self.images} photos "
                f"({100 * self.top_share:.1f} %) get the same cell ({self.top_point[0]:.4f}, "
                f"{self.top_point[1]:.4f}); the accuracy figures describe one answer, not a model")

    def lines(self) -> list[str]:
        out = [f"distinct predicted cells: {self.distinct_cells} for {self.images} photos; the most common takes "
               f"{100 * self.top_share:.1f} %"]
        if self.ece is not None:
            out.append(f"calibration: expected calibration error {self.ece:.3f} (confidence = probability mass within "
                       f"{CONFIDENCE_RADIUS_KM:g} km, against the true location within {CONFIDENCE_RADIUS_KM:g} km, "
                       f"{CALIBRATION_BINS} bins); mean confidence {100 * self.mean_confidence:.1f} %, "
                       f"{100 * self.within_radius:.1f} % within {CONFIDENCE_RADIUS_KM:g} km")
            out.append("selective: within " + f"{CONFIDENCE_RADIUS_KM:g} km " + ", ".join(
                f"{100 * acc:.1f} % of the {100 * coverage:g} % most confident" for coverage, acc in
                self.selective.items()))
        return out

    def to_dict(self) -> dict:
        return {"images": self.images, "distinct_cells": self.distinct_cells, "top_share": self.top_share,
                "top_point": list(self.top_point), "collapsed": self.collapsed, "ece": self.ece,
                "calibration_bins": CALIBRATION_BINS, "confidence_radius_km": CONFIDENCE_RADIUS_KM,
                "mean_confidence": self.mean_confidence, "within_radius": self.within_radius,
                "selective": {f"{k:g}": v for k, v in self.selective.items()}}


@dataclass
class EvaluationReport:
    name: str
    overall: AccuracyRow
    by_concept: dict[str, AccuracyRow] = field(default_factory=dict)
    stored_distance_mismatches: int = 0  # rows whose stored distance disagrees with the coordinates
    stored_summary_matches: bool | None = None  # None when the file had no summary row
    distances_km: np.ndarray = field(default=None, repr=False)
    concepts: list[str] | None = field(default=None, repr=False)
    spread: PredictionSpread | None = None
    overlap: dict | None = None  # the test set against the training data (predictor.ml.train.holdout.Overlap)
    overlap_note: str = ""  # why it was not checked, when it was not

    def rows(self) -> list[AccuracyRow]:
        return [self.overall, *self.by_concept.values()]

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "thresholds_km": list(ACCURACY_THRESHOLDS_KM),
            "rows": [
                {"group": row.group, "images": row.images,
                 "accuracy": {f"{t:g}": row.accuracy[t] for t in ACCURACY_THRESHOLDS_KM},
                 "accuracy_percent": dict(zip([f"{t:g}" for t in ACCURACY_THRESHOLDS_KM], row.percentages())),
                 "mean_km": row.mean_km, "median_km": row.median_km}
                for row in self.rows()
            ],
            "stored_distance_mismatches": self.stored_distance_mismatches,
            "stored_summary_matches": self.stored_summary_matches,
            "spread": self.spread.to_dict() if self.spread is not None else None,
            "overlap_with_training": self.overlap, "overlap_note": self.overlap_note or None,
        }


# --- reading and writing files ---------------------------------------------------------------------------------


def read_results(path: str | Path) -> ImagePredictions:
    """A published results file, strictly: any row that breaks a rule of core.im2gps refuses the whole file."""
    try:
        parsed = im2gps.read_results(path)
    except im2gps.Im2gpsFormatError as error:
        raise ResultsFormatError(str(error)) from None
    return _predictions_of(parsed)


def parse_results(text: str, *, source: str = "<results>") -> ImagePredictions:
    """Parse a results file's text; the summary part (blank line, header, one row) is optional."""
    try:
        parsed = im2gps.parse_results(text, source=source)
    except im2gps.Im2gpsFormatError as error:
        raise ResultsFormatError(str(error)) from None
    return _predictions_of(parsed)


def _predictions_of(parsed: im2gps.ResultsFile) -> ImagePredictions:
    if parsed.problems:
        raise ResultsFormatError(str(parsed.problems[0]))
    rows = parsed.rows
    return ImagePredictions(img_ids=[r.img_id for r in rows], gt_lat=[r.gt_lat for r in rows],
                            pred_lat=[r.predicted_lat for r in rows], gt_lon=[r.gt_lon for r in rows],
                            pred_lon=[r.predicted_lon for r in rows],
                            stored_km=np.array([r.stored_km for r in rows], dtype=np.float64),
                            stored_summary=parsed.summary)


def format_results(predictions: ImagePredictions) -> str:
    """The published results format, with distances recomputed and the summary row."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(RESULTS_HEADER)
    distances = predictions.distances_km
    for i, img_id in enumerate(predictions.img_ids):
        writer.writerow([img_id, f"{predictions.gt_lat[i]:.6f}", f"{predictions.pred_lat[i]:.6f}",
                         f"{predictions.gt_lon[i]:.6f}", f"{predictions.pred_lon[i]:.6f}", f"{distances[i]:.2f}"])
    out.write("\n")
    writer.writerow(SUMMARY_HEADER)
    row = AccuracyRow.of("all", distances)
    writer.writerow([round(row.accuracy[t], 6) for t in ACCURACY_THRESHOLDS_KM] + [round(row.mean_km, 2)])
    return out.getvalue()


def read_meta(path: str | Path) -> dict[str, MetaRecord]:
    """The paper's test-set meta CSV (IMG_ID, LAT, LON, S3_Label, ...) keyed by IMG_ID, strictly (core.im2gps)."""
    try:
        parsed = im2gps.read_meta(path)
    except im2gps.Im2gpsFormatError as error:
        raise ResultsFormatError(str(error)) from None
    if "S3_Label" not in parsed.columns:
        raise ResultsFormatError(f"{path}:1: meta file lacks the columns S3_Label")
    if parsed.problems:
        raise ResultsFormatError(str(parsed.problems[0]))
    records = {}
    for row in parsed.rows:
        if row.s3_label is None:
            raise ResultsFormatError(f"{path}:{row.line}: no S3_Label for {row.img_id}")
        records[row.img_id] = MetaRecord(lat=row.lat, lon=row.lon, concept=S3_CONCEPTS[row.s3_label])
    return records


# --- evaluation ------------------------------------------------------------------------------------------------


def evaluate(predictions: ImagePredictions, *, name: str,
             meta: dict[str, MetaRecord] | None = None) -> EvaluationReport:
    """Accuracy table over all images and, with meta, per S3 concept (joined by image id)."""
    distances = predictions.distances_km
    report = EvaluationReport(name=name, overall=AccuracyRow.of("all", distances), distances_km=distances,
                              spread=PredictionSpread.of(predictions.pred_lat, predictions.pred_lon, distances,
                                                         predictions.confidence))
    if predictions.stored_km is not None:
        report.stored_distance_mismatches = int(np.sum(
            np.abs(predictions.stored_km - distances) > STORED_DISTANCE_TOLERANCE_KM))
    if predictions.stored_summary is not None:
        ours = [round(report.overall.accuracy[t], 6) for t in ACCURACY_THRESHOLDS_KM]
        report.stored_summary_matches = bool(
            np.allclose(ours, predictions.stored_summary[:-1], atol=1.5e-6)
            and abs(report.overall.mean_km - predictions.stored_summary[-1]) <= 0.01)
    if meta is not None:
        missing = [i for i in predictions.img_ids if i not in meta]
        if missing:
            raise ResultsFormatError(
                f"{len(missing)} of {len(predictions)} images are not in the meta file, e.g. {missing[:3]}")
        concepts = [meta[i].concept for i in predictions.img_ids]
        report.concepts = concepts
        labels = np.array(concepts)
        report.by_concept = {c: AccuracyRow.of(c, distances[labels == c]) for c in S3_CONCEPTS}
    return report


def format_table(report: EvaluationReport) -> str:
    """A plain-text table: one line per group with accuracies in percent, mean and median km."""
    head = ["group", "images", *[f"{t:g} km" for t in ACCURACY_THRESHOLDS_KM], "mean km", "median km"]
    lines = [f"{report.name}", "  ".join(f"{h:>9}" for h in head)]
    for row in report.rows():
        cells = [row.group, str(row.images), *[f"{p:.1f}" for p in row.percentages()],
                 f"{row.mean_km:.1f}", f"{row.median_km:.1f}"]
        lines.append("  ".join(f"{c:>9}" for c in cells))
    if report.stored_distance_mismatches:
        lines.append(f"warning: {report.stored_distance_mismatches} stored distances disagree with the coordinates "
                     f"by more than {STORED_DISTANCE_TOLERANCE_KM} km (recomputed values used)")
    if report.stored_summary_matches is False:
        lines.append("warning: the file's own summary row differs from the recomputed accuracies")
    if report.spread is not None and report.spread.images:
        lines += report.spread.lines()
        if report.spread.warning():
            lines.append("WARNING: " + report.spread.warning())
    return "\n".join(lines)


def write_report(report: EvaluationReport, out_dir: str | Path) -> dict[str, Path]:
    """Write <name>_accuracy.csv, <name>_accuracy.json and <name>_accuracy.png into out_dir."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in report.name) or "evaluation"
    paths = {"csv": out_dir / f"{stem}_accuracy.csv", "json": out_dir / f"{stem}_accuracy.json",
             "png": out_dir / f"{stem}_accuracy.png"}
    with paths["csv"].open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["group", "images", *[f"acc_{t:g}km" for t in ACCURACY_THRESHOLDS_KM], "mean_km",
                         "median_km"])
        for row in report.rows():
            writer.writerow([row.group, row.images, *[f"{row.accuracy[t]:.6f}" for t in ACCURACY_THRESHOLDS_KM],
                             f"{row.mean_km:.2f}", f"{row.median_km:.2f}"])
    paths["json"].write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")
    plot_accuracy_curves(_curves_of(report), paths["png"], title=report.name)
    return paths


def _curves_of(report: EvaluationReport) -> dict[str, np.ndarray]:
    curves = {f"all ({report.overall.images})": report.distances_km}
    if report.concepts is not None:
        labels = np.array(report.concepts)
        for concept, row in report.by_concept.items():
            if row.images:
                curves[f"{concept} ({row.images})"] = report.distances_km[labels == concept]
    return curves


# Distances (km) at which a share-within-distance curve is sampled to be stored: 0.1 km to half the Earth's
# circumference, log-spaced, plus the five thresholds so the curve passes through the table's figures.
CURVE_KM = sorted(set(np.round(np.logspace(-1, math.log10(20038), 60), 3).tolist()) | set(ACCURACY_THRESHOLDS_KM))


def curve_percent(distances_km) -> list[float]:
    """Percent of images within each CURVE_KM distance (empty for no images)."""
    d = np.sort(np.asarray(distances_km, dtype=np.float64))
    if d.size == 0:
        return []
    return [round(100 * float(v), 2) for v in np.searchsorted(d, CURVE_KM, side="right") / d.size]


def stored_figures(distances_km, *, test_set: str, source: str) -> dict:
    """What is kept of an evaluation for display (results /models/): percent at each threshold, median and mean
    error, the number of images and the curve."""
    d = np.asarray(distances_km, dtype=np.float64)
    return {"test_set": test_set, "images": int(d.size), "source": source,
            "percent": [round(100 * float(np.mean(d <= t)), 1) for t in ACCURACY_THRESHOLDS_KM] if d.size else [],
            "median_km": round(float(np.median(d)), 1) if d.size else None,
            "mean_km": round(float(d.mean()), 1) if d.size else None,
            "curve_km": CURVE_KM, "curve": curve_percent(d)}


def plot_accuracy_curves(curves: dict[str, np.ndarray], path: str | Path, *, title: str = "") -> Path:
    """Share of images within d km, for d from 0.1 km to half the Earth's circumference, one line per curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = np.logspace(-1, math.log10(20038), 400)
    figure, axes = plt.subplots(figsize=(7, 4.5), dpi=110)
    try:
        for label, distances in curves.items():
            d = np.sort(np.asarray(distances, dtype=np.float64))
            axes.plot(grid, 100 * np.searchsorted(d, grid, side="right") / max(len(d), 1), label=label)
        for t, name in zip(ACCURACY_THRESHOLDS_KM, THRESHOLD_NAMES):
            axes.axvline(t, color="0.8", linewidth=0.8, zorder=0)
            axes.text(t, 101, f"{name}\n{t:g} km", ha="center", va="bottom", fontsize=7, color="0.4")
        axes.set_xscale("log")
        axes.set_xlim(grid[0], grid[-1])
        axes.set_ylim(0, 100)
        axes.set_xlabel("great-circle distance to the true location (km)")
        axes.set_ylabel("images within distance (%)")
        if title:
            axes.set_title(title, pad=24)
        axes.legend(loc="upper left", fontsize=8)
        axes.grid(True, which="major", axis="y", color="0.9")
        figure.tight_layout()
        figure.savefig(path)
    finally:
        plt.close(figure)
    return Path(path)


# --- running a model over a folder of test images ---------------------------------------------------------------


def predict_image_folder(engine, *, image_dir: str | Path, meta: dict[str, MetaRecord],
                         batch_size: int = 32, progress=None,
                         on_prediction=None) -> tuple[ImagePredictions, dict[str, str]]:
    """Run `engine.predict_many` over the meta file's images (files named by IMG_ID) found in image_dir.

    Returns the predictions of the images that were predicted, and {img_id: reason} for the ones that were
    skipped (file missing, unreadable, model error), so one broken image never stops the run.
    `on_prediction(img_id, prediction)` sees every successful prediction (e.g. for selective prediction).
    """
    image_dir = Path(image_dir)
    if not image_dir.is_dir():
        raise FileNotFoundError(f"{image_dir}: not a folder")
    skipped = {i: "file not found" for i in meta if not (image_dir / i).is_file()}
    wanted = [i for i in meta if i not in skipped]
    ids, coords, confidence = [], [], []
    for start in range(0, len(wanted), batch_size):
        batch = wanted[start:start + batch_size]
        # The engine decodes files itself (in its worker threads), and returns an Exception for a bad one.
        for img_id, result in zip(batch, engine.predict_many([image_dir / i for i in batch])):
            if isinstance(result, Exception):
                skipped[img_id] = f"prediction failed: {result}"
            else:
                ids.append(img_id)
                coords.append((result.lat, result.lon))
                if on_prediction is not None:
                    on_prediction(img_id, result)
                confidence.append(float(result.confidence))
        if progress is not None:
            progress(start + len(batch), len(wanted))
    if not ids:
        raise ResultsFormatError(f"no image of the meta file could be predicted from {image_dir}")
    array = np.array(coords, dtype=np.float64)
    predictions = ImagePredictions(img_ids=ids, gt_lat=[meta[i].lat for i in ids], gt_lon=[meta[i].lon for i in ids],
                                   pred_lat=array[:, 0], pred_lon=array[:, 1], confidence=np.array(confidence))
    return predictions, skipped

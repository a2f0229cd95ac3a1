"""Selective prediction (Panagiotopoulos et al., MMM 2022): answer only when the model can know.

For any model, a confidence score per image and a localizable / non-localizable verdict:

- swc bundles: PD, the prediction density of Search within Cell (`Prediction.refined.score`), and the bundle's own
  verdict (`refined.localizable`, PD above its conf_thres).
- ISN / base bundles: the maximum probability of f* and its negative entropy (over the f* cells the prediction
  ranks, the remaining mass counted as one more outcome: a lower bound of the full entropy); the verdict is the
  same PD as MeVer's on f* (`Prediction.confidence`, the mass within 25 km of the estimate) above `conf_thres`.
- GeoCLIP: the gallery mass within 25 km of its answer (`Prediction.confidence`), above `conf_thres`.

`selective_report` gives the accuracy of each split and, per score, the accuracy–coverage curve: images sorted by
the score, most confident first; at coverage c the accuracy of the top c share. Written as CSV and PNG.
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .geodesy import ACCURACY_THRESHOLDS_KM
from .prediction import HIERARCHY, Prediction

DEFAULT_CONF_THRES = 0.2


def scores_of(prediction: Prediction, kind: str) -> dict[str, float]:
    """The confidence scores of one prediction (higher: more confident)."""
    if prediction.refined is not None:
        return {"prediction density": float(prediction.refined.score)}
    if kind == "geoclip":
        return {"gallery mass": float(prediction.confidence)}
    cells = prediction.top_cells.get(HIERARCHY) or []
    p = np.array([c.probability for c in cells], dtype=np.float64)
    rest = max(0.0, 1.0 - float(p.sum()))
    q = np.concatenate([p, [rest]]) if rest > 0 else p
    q = q[q > 0]
    return {"max probability of f*": float(p.max()) if p.size else 0.0,
            "negative entropy of f*": float((q * np.log(q)).sum()) if q.size else -math.inf}


def localizable_of(prediction: Prediction, *, conf_thres: float = DEFAULT_CONF_THRES) -> bool:
    if prediction.refined is not None:
        return bool(prediction.refined.localizable)
    return float(prediction.confidence) > conf_thres


@dataclass
class SelectiveReport:
    name: str
    distances_km: np.ndarray
    localizable: np.ndarray  # bool per image
    scores: dict[str, np.ndarray]
    coverage_points: int = 20
    curves: dict[str, list[dict]] = field(default_factory=dict)

    def split(self, localizable: bool) -> dict:
        d = self.distances_km[self.localizable == localizable]
        return {"images": int(d.size), "share": float(d.size / max(self.distances_km.size, 1)),
                **{f"acc{t:g}km": (float(np.mean(d <= t)) if d.size else float("nan"))
                   for t in ACCURACY_THRESHOLDS_KM}}

    def lines(self) -> list[str]:
        out = []
        for flag, label in ((True, "localizable"), (False, "non-localizable")):
            row = self.split(flag)
            accuracy = " / ".join(f"{100 * row[f'acc{t:g}km']:.1f}" for t in ACCURACY_THRESHOLDS_KM)
            out.append(f"{label}: {row['images']} images ({100 * row['share']:.1f}%), accuracy at "
                       f"{' / '.join(f'{t:g}' for t in ACCURACY_THRESHOLDS_KM)} km: {accuracy} %")
        return out


def selective_report(*, name: str, distances_km, localizable, scores: dict[str, list[float]],
                     coverage_points: int = 20) -> SelectiveReport:
    distances = np.asarray(distances_km, dtype=np.float64)
    report = SelectiveReport(name=name, distances_km=distances, localizable=np.asarray(localizable, dtype=bool),
                             scores={k: np.asarray(v, dtype=np.float64) for k, v in scores.items()},
                             coverage_points=coverage_points)
    n = distances.size
    for score, values in report.scores.items():
        order = np.argsort(-values, kind="stable")
        sorted_d = distances[order]
        rows = []
        for step in range(1, coverage_points + 1):
            k = max(1, int(round(n * step / coverage_points)))
            top = sorted_d[:k]
            rows.append({"score": score, "coverage": k / n, "images": k, "min_score": float(values[order][k - 1]),
                         **{f"acc{t:g}km": float(np.mean(top <= t)) for t in ACCURACY_THRESHOLDS_KM}})
        report.curves[score] = rows
    return report


def write_selective(report: SelectiveReport, out_dir: str | Path) -> dict[str, Path]:
    """<name>_selective.csv (the curves and the two splits) and <name>_selective.png (accuracy against coverage)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"selective_csv": out_dir / f"{report.name}_selective.csv",
             "selective_png": out_dir / f"{report.name}_selective.png"}
    radii = [f"acc{t:g}km" for t in ACCURACY_THRESHOLDS_KM]
    with open(paths["selective_csv"], "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["score", "coverage", "images", "min_score", *radii])
        for rows in report.curves.values():
            for row in rows:
                writer.writerow([row["score"], f"{row['coverage']:.4f}", row["images"], f"{row['min_score']:.6g}",
                                 *[f"{row[r]:.6f}" for r in radii]])
        for flag, label in ((True, "split: localizable"), (False, "split: non-localizable")):
            row = report.split(flag)
            writer.writerow([label, f"{row['share']:.4f}", row["images"], "", *[f"{row[r]:.6f}" for r in radii]])
    _plot(report, paths["selective_png"])
    return paths


def _plot(report: SelectiveReport, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    styles = ["-", "--", ":", "-."]
    figure, axes = plt.subplots(figsize=(7, 4.5), dpi=110)
    try:
        for s, (score, rows) in enumerate(report.curves.items()):
            coverage = [100 * r["coverage"] for r in rows]
            for t_index, t in enumerate(ACCURACY_THRESHOLDS_KM):
                axes.plot(coverage, [100 * r[f"acc{t:g}km"] for r in rows], styles[s % len(styles)],
                          color=f"C{t_index}", label=f"{t:g} km, by {score}")
        axes.set_xlim(0, 100)
        axes.set_ylim(0, 100)
        axes.set_xlabel("coverage: most confident images answered (%)")
        axes.set_ylabel("accuracy within distance (%)")
        axes.set_title(f"{report.name}: accuracy against coverage")
        axes.legend(loc="lower left", fontsize=7, ncol=2)
        axes.grid(True, color="0.9")
        figure.tight_layout()
        figure.savefig(path)
    finally:
        plt.close(figure)

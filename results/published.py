"""The published figures /models/ compares with, and the accuracy of the paper's models computed from their
published per-image answers.

Reference figures are the percentages within 1 / 25 / 200 / 750 / 2500 km as the papers report them (see
../shared/reference/model-anchors.md: the ISN and base rows are the summary rows of TIB's own result files, GeoCLIP's
row is its NeurIPS'23 Im2GPS3k table). Nothing here imports Django.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core import im2gps
from predictor.ml.evaluation import CURVE_KM, curve_percent
from predictor.ml.geodesy import ACCURACY_THRESHOLDS_KM, great_circle_km

DATASETS = ("Im2GPS", "Im2GPS3k")
# Where each test set's published answers are, under PUBLISHED_RESULTS_DIR.
RESULT_FOLDERS = {"Im2GPS": "results_im2gps", "Im2GPS3k": "results_im2gps3k"}
# The paper's file stems and the names the games give those models (games.importing.PUBLISHED_MODEL_NAMES).
PUBLISHED_FILES = {
    "ISNs_M-fstar-S3": "ISNs(M, f*, S3)",
    "base_M-fstar": "base(M, f*)",
    "base_M-m": "base(M, m)",
    "base_L-m": "base(L, m)",
    "base-vgg_L-m": "base-vgg(L, m)",
    "base-vgg-c_L-m": "base-vgg-c(L, m)",
}


@dataclass(frozen=True)
class Reference:
    """A published row: percentages at 1/25/200/750/2500 km (None where the paper gives none)."""

    name: str
    dataset: str
    percent: tuple[float | None, ...]
    source: str


# The reference lines drawn on every accuracy-vs-distance chart.
REFERENCES = (
    Reference("ISNs(M, f*, S3) (paper)", "Im2GPS", (16.9, 43.0, 51.9, 66.7, 80.2),
              "Müller-Budack et al. 2018, summary row of results/im2gps/ISNs_M-fstar-S3.csv"),
    Reference("base(M, f*) (paper)", "Im2GPS", (15.2, 40.9, 51.5, 65.4, 78.5),
              "Müller-Budack et al. 2018, summary row of results/im2gps/base_M-fstar.csv"),
    Reference("ISNs(M, f*, S3) (paper)", "Im2GPS3k", (10.5, 28.0, 36.6, 49.7, 66.0),
              "Müller-Budack et al. 2018, summary row of results/im2gps3k/ISNs_M-fstar-S3.csv"),
    Reference("base(M, f*) (paper)", "Im2GPS3k", (9.7, 27.0, 35.6, 49.1, 66.0),
              "Müller-Budack et al. 2018, summary row of results/im2gps3k/base_M-fstar.csv"),
    Reference("GeoCLIP (published)", "Im2GPS3k", (14.1, 34.5, 50.7, 69.7, 83.8),
              "Vivanco Cepeda et al., NeurIPS 2023, Im2GPS3k table (GeoCLIP does not report Im2GPS)"),
)

def references(dataset: str) -> list[Reference]:
    return [ref for ref in REFERENCES if ref.dataset == dataset]


def curve_of(distances_km) -> list[float]:
    """Percent of images within each CURVE_KM distance."""
    return curve_percent(distances_km)


def accuracy_entry(distances_km, *, source: str) -> dict:
    """What /models/ stores for one model on one test set: percent at each threshold, median and mean error, the
    number of images, the curve and where the figures come from."""
    d = np.asarray(distances_km, dtype=np.float64)
    return {"percent": [round(100 * float(np.mean(d <= t)), 1) for t in ACCURACY_THRESHOLDS_KM],
            "images": int(d.size), "median_km": round(float(np.median(d)), 1), "mean_km": round(float(d.mean()), 1),
            "curve": curve_of(d), "source": source}


def published_accuracy(folder: str | Path | None) -> dict[str, dict[str, dict]]:
    """{model name: {dataset: accuracy_entry}} computed from every published results file found under `folder`
    (results_im2gps/<stem>.csv, results_im2gps3k/<stem>.csv). Files that are missing are skipped; a malformed file
    raises im2gps.Im2gpsFormatError."""
    found: dict[str, dict[str, dict]] = {}
    if not folder:
        return found
    for dataset, sub in RESULT_FOLDERS.items():
        for stem, name in PUBLISHED_FILES.items():
            path = Path(folder) / sub / f"{stem}.csv"
            if not path.is_file():
                continue
            rows = im2gps.read_results(path).rows
            distances = great_circle_km(np.array([r.gt_lat for r in rows]), np.array([r.gt_lon for r in rows]),
                                        np.array([r.predicted_lat for r in rows]), np.array([r.predicted_lon for r in rows]))
            found.setdefault(name, {})[dataset] = accuracy_entry(
                np.atleast_1d(distances), source=f"computed here from the published answers ({sub}/{stem}.csv)")
    return found


def paper_figures(name: str) -> dict[str, dict]:
    """The paper's own summary figures for a published model (when its files are not here), by dataset."""
    out = {}
    for ref in REFERENCES:
        if ref.name == f"{name} (paper)":
            out[ref.dataset] = {"percent": list(ref.percent), "images": None, "median_km": None, "mean_km": None,
                                "curve": [], "source": f"as published: {ref.source}"}
    return out


def files_fingerprint(folder: str | Path | None) -> list:
    """(path, size, mtime) of the results files: the cache of /models/ is rebuilt when they change."""
    if not folder:
        return []
    out = []
    for sub in RESULT_FOLDERS.values():
        for stem in PUBLISHED_FILES:
            path = Path(folder) / sub / f"{stem}.csv"
            if path.is_file():
                stat = path.stat()
                out.append([str(path), stat.st_size, int(stat.st_mtime)])
    return out

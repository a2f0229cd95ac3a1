"""Server-side charts of /models/ and /results/: matplotlib (already a pinned dependency, used by `evaluate`) drawn
to SVG once, when the numbers are recomputed, and served as cached files. Text stays text (svg.fonttype "none"), so
the charts are small, sharp at any zoom and their labels can be searched and read by tests and screen readers."""
from __future__ import annotations

import io
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from predictor.ml.geodesy import ACCURACY_THRESHOLDS_KM, THRESHOLD_NAMES  # noqa: E402

PEOPLE = "#d1495b"
MODEL = "#00798c"


def _svg(figure) -> str:
    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "geoweb"}):
        figure.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None})
    plt.close(figure)
    return buffer.getvalue()


def accuracy_curve(*, title: str, curve_km: list[float], curve: list[float], percent: list[float] | None,
                   label: str, references) -> str:
    """Share of photos within d km: the model (its full curve when per-image answers are known, else its five
    figures) and the reference rows (results.published.REFERENCES) of the same test set, on one log axis."""
    figure, axes = plt.subplots(figsize=(7, 4.2), dpi=100)
    if curve:
        axes.plot(curve_km, curve, color=MODEL, linewidth=2.2, label=label)
    elif percent:
        axes.plot(ACCURACY_THRESHOLDS_KM, percent, color=MODEL, linewidth=2.2, marker="o", label=label)
    styles = ["--", ":", "-."]
    for i, ref in enumerate(references):
        points = [(t, p) for t, p in zip(ACCURACY_THRESHOLDS_KM, ref.percent) if p is not None]
        axes.plot([t for t, _ in points], [p for _, p in points], linestyle=styles[i % len(styles)], marker="s",
                  markersize=4, linewidth=1.2, color=f"C{i + 1}", label=ref.name)
    for t, name in zip(ACCURACY_THRESHOLDS_KM, THRESHOLD_NAMES):
        axes.axvline(t, color="0.85", linewidth=0.8, zorder=0)
        axes.text(t, 101, f"{name}", ha="center", va="bottom", fontsize=7, color="0.4")
    axes.set_xscale("log")
    axes.set_xlim(0.1, 20038)
    axes.set_ylim(0, 100)
    axes.set_xlabel("distance to the true location (km)")
    axes.set_ylabel("photos within that distance (%)")
    axes.set_title(title, pad=16, fontsize=10)
    axes.legend(loc="upper left", fontsize=7)
    figure.tight_layout()
    return _svg(figure)


def median_errors(*, names: list[str], people: list[float], models: list[float], title: str) -> str:
    """Grouped horizontal bars: median error of people and of the model on the same photos, per group."""
    height = 1.2 + 0.45 * max(len(names), 1)
    figure, axes = plt.subplots(figsize=(7, height), dpi=100)
    ys = range(len(names))
    axes.barh([y + 0.2 for y in ys], people, height=0.4, color=PEOPLE, label="people")
    axes.barh([y - 0.2 for y in ys], models, height=0.4, color=MODEL, label="model")
    for y, (p, m) in enumerate(zip(people, models)):
        axes.text(p, y + 0.2, f" {p:,.0f} km", va="center", fontsize=7)
        axes.text(m, y - 0.2, f" {m:,.0f} km", va="center", fontsize=7)
    axes.set_yticks(list(ys), names, fontsize=8)
    axes.invert_yaxis()
    axes.set_xlabel("median error (km, lower is better)")
    axes.set_xlim(0, max([*people, *models, 1]) * 1.25)
    axes.set_title(title, fontsize=10)
    axes.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    return _svg(figure)


def beat_rates(*, names: list[str], rates: list[float], title: str) -> str:
    """How often people were closer than the model, per group, with the 50% line."""
    height = 1.2 + 0.35 * max(len(names), 1)
    figure, axes = plt.subplots(figsize=(7, height), dpi=100)
    axes.barh(list(range(len(names))), [100 * r for r in rates], color=PEOPLE, height=0.6)
    for y, r in enumerate(rates):
        axes.text(100 * r, y, f" {100 * r:.0f}%", va="center", fontsize=7)
    axes.axvline(50, color="0.3", linewidth=0.8, linestyle="--")
    axes.set_yticks(list(range(len(names))), names, fontsize=8)
    axes.invert_yaxis()
    axes.set_xlim(0, 110)
    axes.set_xlabel("rounds where people were closer than the model (%)")
    axes.set_title(title, fontsize=10)
    figure.tight_layout()
    return _svg(figure)


def score_distribution(*, edges: list[float], people: list[int], model: list[int], title: str) -> str:
    """Histogram of round scores (0-5000) of people and of the model, as shares of the rounds."""
    figure, axes = plt.subplots(figsize=(7, 3.4), dpi=100)
    total_p, total_m = max(sum(people), 1), max(sum(model), 1)
    width = (edges[1] - edges[0]) * 0.42 if len(edges) > 1 else 100
    centres = [(a + b) / 2 for a, b in zip(edges, edges[1:])]
    axes.bar([c - width / 2 for c in centres], [100 * n / total_p for n in people], width=width, color=PEOPLE,
             label="people")
    axes.bar([c + width / 2 for c in centres], [100 * n / total_m for n in model], width=width, color=MODEL,
             label="model")
    axes.set_xlabel("round score (0-5000, higher is better)")
    axes.set_ylabel("rounds (%)")
    axes.set_title(title, fontsize=10)
    axes.legend(fontsize=8)
    figure.tight_layout()
    return _svg(figure)


def finite(values) -> list[float]:
    return [0.0 if v is None or (isinstance(v, float) and math.isnan(v)) else float(v) for v in values]

"""Computing and caching the figures of /models/ and /results/.

/models/ is rebuilt when what it is computed from changes (the installed bundles, the published results files, the
models with stored game answers); /results/ and its CSV export are rebuilt by `manage.py recompute_results` (or a
background refresh when the cached figures are older than RESULTS_REFRESH_S). A request never computes figures: it
reads one cached row.
"""
from __future__ import annotations

import csv
import io
import logging
import threading
import time

from django.conf import settings
from django.db import connections, transaction
from django.template.loader import render_to_string
from django.utils import timezone

from games.models import ModelGuess
from predictor import registry
from results import answers, cards, charts, published, stats
from results.models import Snapshot

log = logging.getLogger(__name__)

MODELS_KEY, RESULTS_KEY, EXPORT_KEY = "models", "results", "export"
EXPORT_LICENCE = "CC BY 4.0"
EXPORT_LICENCE_URL = "https://creativecommons.org/licenses/by/4.0/"


# --- /models/ ---------------------------------------------------------------------------------------------------

def _opponent_names() -> list[str]:
    return sorted(set(ModelGuess.objects.values_list("model_name", flat=True).distinct()))


def models_fingerprint() -> list:
    """What /models/ is computed from; cheap to read (file stats, one distinct query)."""
    bundles = []
    for bundle in registry.installed_bundles():
        try:
            mtime = int((bundle.path / "config.json").stat().st_mtime)
        except OSError:
            mtime = 0
        stored = sorted([p.name, int(p.stat().st_mtime)] for p in (bundle.path / "evaluations").glob("*.json"))
        bundles.append([bundle.name, mtime, bundle.untrained, bundle.active, stored])
    return [settings.PUBLISHED_RESULTS_DIR, published.files_fingerprint(settings.PUBLISHED_RESULTS_DIR), bundles,
            _opponent_names()]


def compute_models_page(*, fingerprint: list | None = None) -> Snapshot:
    """Build and store the /models/ entries and their accuracy charts."""
    started = time.perf_counter()
    fingerprint = fingerprint if fingerprint is not None else models_fingerprint()
    computed = published.published_accuracy(settings.PUBLISHED_RESULTS_DIR)
    entries = []
    bundle_names = set()
    for bundle in registry.installed_bundles():
        bundle_names.add(bundle.name)
        entries.append(cards.bundle_card(name=bundle.name, path=bundle.path, untrained=bundle.untrained,
                                         active=bundle.active, config=bundle.config))
    for name in _opponent_names():
        if name in bundle_names:
            continue
        accuracy = computed.get(name) or published.paper_figures(name)
        entries.append(cards.published_card(name, accuracy=accuracy))
    svgs = {}
    for entry in entries:
        entry["charts"] = []
        if entry["untrained"]:
            continue
        for dataset in published.DATASETS:
            figures = entry["accuracy"].get(dataset)
            if not figures:
                continue
            chart = f"{entry['slug']}-{dataset.lower()}"
            svgs[chart] = charts.accuracy_curve(
                title=f"{entry['name']} on {dataset}", curve_km=published.CURVE_KM, curve=figures.get("curve") or [],
                percent=figures["percent"], label=entry["name"], references=published.references(dataset))
            entry["charts"].append({"name": chart, "dataset": dataset})
    data = {"entries": entries, "thresholds_km": [1, 25, 200, 750, 2500], "datasets": list(published.DATASETS),
            "references": [{"name": r.name, "dataset": r.dataset, "percent": list(r.percent), "source": r.source}
                           for r in published.REFERENCES]}
    return _store(MODELS_KEY, data=data, charts=svgs, fingerprint=fingerprint, seconds=time.perf_counter() - started)


def models_snapshot() -> Snapshot:
    """The cached /models/ figures, rebuilt only when what they are computed from has changed."""
    fingerprint = models_fingerprint()
    snapshot = Snapshot.objects.filter(key=MODELS_KEY).first()
    if snapshot is not None and snapshot.fingerprint == fingerprint:
        return snapshot
    return compute_models_page(fingerprint=fingerprint)


# --- /results/ --------------------------------------------------------------------------------------------------

def _continents(rounds: list[answers.PlayedRound]) -> dict[int, str]:
    from predictor.places import reverse_geocode

    truths = {}
    for r in rounds:
        truths.setdefault(r.image_id, (r.true_lat, r.true_lon))
    ids = list(truths)
    places = reverse_geocode([truths[i] for i in ids])
    return {i: place["continent"] for i, place in zip(ids, places)}


def export_csv(rounds: list[answers.PlayedRound]) -> str:
    """The anonymised per-round table: no user, game or time; people's guesses rounded to 0.1°; rows ordered by
    photo and error so that the rounds of one game cannot be put back together."""
    width = max((len(r.answers) for r in rounds), default=1) or 1
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    header = ["photo_id", "true_lat", "true_lon", "scene", "people_lat", "people_lon", "people_km", "people_score"]
    for i in range(1, width + 1):
        header += [f"model{i}_name", f"model{i}_lat", f"model{i}_lon", f"model{i}_km", f"model{i}_score"]
    writer.writerow(header)
    rows = []
    for r in rounds:
        row = [r.photo_id, f"{r.true_lat:.6f}", f"{r.true_lon:.6f}", r.scene, f"{r.guess_lat:.1f}",
               f"{r.guess_lon:.1f}", f"{r.distance_km:.0f}", r.score]
        for answer in r.answers:
            row += [answer.model, f"{answer.lat:.6f}", f"{answer.lon:.6f}", f"{answer.distance_km:.1f}",
                    answer.score]
        row += [""] * (len(header) - len(row))
        rows.append(row)
    rows.sort(key=lambda row: (row[0], float(row[6]), row[4], row[5]))
    writer.writerows(rows)
    return buffer.getvalue()


def _results_charts(data: dict) -> dict[str, str]:
    svgs = {}
    blocks = [data["overall"], *data["models"]]
    if not data["models"]:
        return svgs
    svgs["median-by-model"] = charts.median_errors(
        names=[b["name"] for b in blocks], people=[b["overall"]["people_median_km"] for b in blocks],
        models=[b["overall"]["model_median_km"] for b in blocks],
        title="Median error on the same photos: people and each model")
    for i, block in enumerate(blocks):
        slug = "all" if i == 0 else f"model-{i}"
        block["slug"] = slug
        scenes = list(block["by_scene"])
        svgs[f"{slug}-scene"] = charts.median_errors(
            names=scenes, people=[block["by_scene"][s]["people_median_km"] for s in scenes],
            models=[block["by_scene"][s]["model_median_km"] for s in scenes],
            title=f"Median error by scene: people and {block['name']}")
        continents = list(block["by_continent"])
        svgs[f"{slug}-continent"] = charts.beat_rates(
            names=continents, rates=[block["by_continent"][c]["people_beat_rate"] for c in continents],
            title=f"How often people beat {block['name']}, by continent of the photo")
        svgs[f"{slug}-scores"] = charts.score_distribution(
            edges=data["score_edges"], people=block["scores"]["people"], model=block["scores"]["model"],
            title=f"Round scores: people and {block['name']}")
    return svgs


def recompute_results() -> Snapshot:
    """Recompute the /results/ numbers, charts and CSV export from every guessed round, and store them."""
    started = time.perf_counter()
    rounds = list(answers.played_rounds())
    data = stats.compute(rounds, continents=_continents(rounds) if rounds else {})
    svgs = _results_charts(data)
    text = export_csv(rounds)
    seconds = time.perf_counter() - started
    data["export_rows"] = len(rounds)
    data["export_bytes"] = len(text.encode())
    # The tables of the page are rendered here, once, and stored: a request only reads and sends them.
    body = render_to_string("results/_body.html", {"page": {**data, "licence": EXPORT_LICENCE,
                                                             "licence_url": EXPORT_LICENCE_URL}})
    with transaction.atomic():
        _store(EXPORT_KEY, data={"rows": len(rounds)}, charts={}, fingerprint=[], seconds=seconds, text=text)
        snapshot = _store(RESULTS_KEY, data=data, charts=svgs, fingerprint=[len(rounds)], seconds=seconds,
                          text=body)
    return snapshot


_refreshing = threading.Lock()


def refresh_results_in_background() -> bool:
    """Start one background recompute in this process unless one is running; True when one was started."""
    if not _refreshing.acquire(blocking=False):
        return False

    def run():
        try:
            recompute_results()
        except Exception:  # logged: a failed refresh keeps the previous figures
            log.exception("recomputing /results/ failed")
        finally:
            connections.close_all()  # this thread's own connections: it ends here
            _refreshing.release()

    threading.Thread(target=run, name="results-refresh", daemon=True).start()
    return True


def _store(key: str, *, data: dict, charts: dict, fingerprint: list, seconds: float, text: str = "") -> Snapshot:
    snapshot, _ = Snapshot.objects.update_or_create(
        key=key, defaults={"data": data, "charts": charts, "fingerprint": fingerprint, "seconds": seconds,
                           "text": text, "computed_at": timezone.now()})
    return snapshot

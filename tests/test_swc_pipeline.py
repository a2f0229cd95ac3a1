"""Search within Cell end to end through the commands: synthetic photos -> shards -> `train --contrastive-weight`
(tiny backbone + retrieval head) -> `export_bundle` (an swc bundle) -> `build_background --install` -> predictions
refined inside the cell with prediction density."""
from __future__ import annotations

import json

import numpy as np
import pytest
from django.core.management import call_command
from PIL import Image

from predictor.ml.train.cells import build_hierarchy
from predictor.ml.train.datasets import SourceReport, read_metadata
from tests.train_synthetic import write_csv_dataset


@pytest.fixture(scope="module")
def swc_training(tmp_path_factory):
    root = tmp_path_factory.mktemp("swc-pipeline")
    metadata = write_csv_dataset(root / "photos", 240, seed=31)
    rows = read_metadata(metadata, SourceReport())
    hierarchy = build_hierarchy([r.lat for r in rows.values()], [r.lon for r in rows.values()], tau_min=4,
                                tau_maxes=(60, 30, 15))
    cell_files = []
    for partitioning in hierarchy:
        cell_files.append(str(root / f"{partitioning.name}.csv"))
        partitioning.to_csv(cell_files[-1])
    shards = root / "shards"
    call_command("preprocess_images", "--source", "csv", "--metadata", str(metadata),
                 "--images", str(root / "photos" / "images"), "--output", str(shards),
                 "--partitionings", *cell_files, "--val-fraction", "0.2", "--samples-per-shard", "64",
                 verbosity=0)
    run = root / "run"
    call_command("train", "--train-shards", str(shards / "train"), "--val-shards", str(shards / "val"),
                 "--partitionings", *cell_files, "--output", str(run), "--backbone", "tiny", "--epochs", "2",
                 "--batch-size", "32", "--lr", "0.05", "--crop-size", "48", "--workers", "0", "--no-progress",
                 "--contrastive-weight", "1.0", "--positive-km", "150", "--embedding-dim", "32")
    return root, shards, run, metadata


def test_training_with_a_retrieval_head_records_its_loss_and_exports_an_swc_bundle(swc_training, tiny_bundle):
    from predictor.ml.kinds import verify_bundle
    from predictor.ml.train.loop import load_checkpoint, network_from_checkpoint

    root, _, run, _ = swc_training
    history = load_checkpoint(run / "last.pt")["history"]
    assert len(history) == 2 and all(row["train_loss_contrastive"] > 0 for row in history)
    # The validation figures are the classification heads' (the embedding is not mistaken for a head).
    assert 0 <= history[-1]["val_acc2500km_hierarchy"] <= 1
    network = network_from_checkpoint(load_checkpoint(run / "best.pt"))
    assert network.retrieval.dim == 32
    bundle = root / "swc-bundle-card"
    call_command("export_bundle", "--checkpoint", str(run / "best.pt"), "--name", "synthetic-swc",
                 "--output", str(bundle), "--scene-model", str(tiny_bundle),
                 "--training-data", "240 synthetic colour-coded photos", verbosity=0)
    config = verify_bundle(bundle)
    assert config["kind"] == "swc" and config["background"] is None and config["retrieval"]["dim"] == 32


@pytest.fixture(scope="module")
def swc_bundles(swc_training, tiny_bundle):
    """The exported swc bundle and two bundles with its background collection: one whose PD threshold every photo
    passes (0), one that no photo can pass (1)."""
    root, shards, run, _ = swc_training
    bundle = root / "swc-bundle"
    if not bundle.exists():
        call_command("export_bundle", "--checkpoint", str(run / "best.pt"), "--name", "synthetic-swc",
                     "--output", str(bundle), "--scene-model", str(tiny_bundle), verbosity=0)
    call_command("build_background", "--model", str(bundle), "--shards", str(shards / "train"),
                 "--output", str(root / "swc-bg"), "--name", "synthetic-swc-bg", "--conf-thres", "0",
                 "--eps-km", "30", verbosity=0)
    call_command("build_background", "--model", str(bundle), "--shards", str(shards / "train"),
                 "--output", str(root / "swc-bg-strict"), "--name", "synthetic-swc-strict", "--conf-thres", "1",
                 verbosity=0)
    return root / "swc-bg", root / "swc-bg-strict"


def test_build_background_command_installs_a_bundle_that_refines(swc_training, swc_bundles, settings, tmp_path,
                                                                  capsys):
    from predictor import registry
    from predictor.ml.engine import InferenceEngine
    from predictor.ml.kinds import load_bundle

    settings.MODEL_DIR = tmp_path / "models"
    root, shards, _, _ = swc_training
    call_command("build_background", "--model", str(swc_bundles[0]), "--shards", str(shards / "train"),
                 "--output", str(tmp_path / "again"), "--name", "synthetic-swc-again", "--install", verbosity=0)
    out = capsys.readouterr().out
    train_count = json.loads((shards / "train" / "index.json").read_text())["samples"]
    assert f"{train_count} background photos" in out and "72 MB per million photos" in out
    assert registry.active_bundle_path().name == "synthetic-swc-again"
    model = load_bundle(registry.active_bundle_path())
    assert model.background.images == train_count and model.search.eps_km == 30
    photos = sorted((root / "photos" / "images").glob("*.jpg"))[:3]
    with InferenceEngine(model, max_batch_size=4) as engine:
        predictions = engine.predict_many([Image.open(p) for p in photos])
    stored = np.asarray(model.background.coords, dtype=np.float64)
    for prediction in predictions:
        assert prediction.refined is not None and "medoid of the densest cluster" in prediction.refined.note
        assert np.abs(stored - [prediction.lat, prediction.lon]).sum(axis=1).min() < 1e-3
        assert 0 < prediction.refined.score <= 1 and prediction.refined.localizable  # conf_thres 0


# --- upload analysis ---------------------------------------------------------------------------------------------


@pytest.fixture
def upload_settings(settings, tmp_path):
    from predictor import inference, worker

    settings.EMBEDDED_WORKER = False
    settings.MODEL_DIR = tmp_path / "models"
    settings.UPLOAD_COARSEN_INDOOR = False
    settings.UPLOAD_FACE_DETECTION = False
    worker.stop_embedded_worker()
    inference.reset_engine()
    yield settings
    inference.reset_engine()


def _values(tree, keys: set[str]) -> set:
    """Every value stored under one of `keys`, at any depth of a JSON-like tree."""
    found = set()
    if isinstance(tree, dict):
        for key, value in tree.items():
            if key in keys:
                found.add(json.dumps(value))
            found |= _values(value, keys)
    elif isinstance(tree, list):
        for item in tree:
            found |= _values(item, keys)
    return {None if v == "null" else v for v in found}


def _analyse(user, bundle, photo: bytes):
    from predictor import registry, services
    from predictor.models import Analysis

    registry.install_bundle(bundle, replace=True)
    analysis = services.create_analysis(owner=user, data=photo)
    services.run_analyses(analyses=services.claim_analyses(worker_id="swc-test", limit=4))
    return Analysis.objects.get(pk=analysis.pk)


@pytest.mark.django_db(transaction=True)
async def test_upload_streams_refined_with_pd_over_the_websocket(swc_training, swc_bundles, upload_settings, user):
    from channels.db import database_sync_to_async

    from tests.streaming import open_socket, receive_until, run_queued
    from predictor import registry, services

    upload_settings.UPLOAD_GRANULARITY = "fine"
    root = swc_training[0]
    photo = sorted((root / "photos" / "images").glob("*.jpg"))[0].read_bytes()
    await database_sync_to_async(registry.install_bundle)(swc_bundles[0], replace=True)
    analysis = await database_sync_to_async(services.create_analysis)(owner=user, data=photo)
    socket = await open_socket(analysis.pk, user)
    try:
        await socket.receive_json_from(timeout=5)  # status: queued
        assert await run_queued() == 1
        streamed = await receive_until(socket, {"done", "error"})
    finally:
        await socket.disconnect()
    assert [m["type"] for m in streamed] == ["scene", "partitions", "heatmap", "estimate", "refined", "cam", "done"]
    estimate, refined = streamed[3], streamed[4]
    assert refined["localizable"] is True and 0 < refined["density"] <= 1 and refined["granularity"] == "fine"
    # At fine level the refined point is the estimate, and only the point: no neighbour, photo or position list.
    assert (refined["lat"], refined["lon"]) == (estimate["lat"], estimate["lon"])
    assert set(refined) == {"type", "density", "localizable", "granularity", "lat", "lon", "note", "decimals", "seq",
                           "analysis"}
    assert "medoid of the densest cluster" in refined["note"] and not estimate.get("coarsening_reason")


@pytest.mark.django_db(transaction=True)
def test_refined_obeys_the_granularity_and_non_localizable_photos_are_answered_coarser(
        swc_training, swc_bundles, upload_settings, user):
    root = swc_training[0]
    photo = sorted((root / "photos" / "images").glob("*.jpg"))[1].read_bytes()
    # Region level: PD and the verdict are shown, the street-level point is not.
    upload_settings.UPLOAD_GRANULARITY = "region"
    analysis = _analyse(user, swc_bundles[0], photo)
    refined = next(e for e in analysis.events if e["type"] == "refined")
    assert analysis.granularity == "region" and refined["lat"] is None and refined["lon"] is None
    assert refined["localizable"] is True and "not shown at region level" in refined["note"]
    assert "medoid" not in json.dumps(analysis.events)
    # Fine level, but the model judges the photo not localizable: country level, with the reason on the page.
    upload_settings.UPLOAD_GRANULARITY = "fine"
    upload_settings.UPLOAD_NON_LOCALIZABLE = "country"
    analysis = _analyse(user, swc_bundles[1], photo)
    refined = next(e for e in analysis.events if e["type"] == "refined")
    estimate = next(e for e in analysis.events if e["type"] == "estimate")
    assert refined["localizable"] is False and refined["lat"] is None
    assert analysis.granularity == "country" and estimate["granularity"] == "country"
    assert "Shown at country level because the model judges this photo not localizable" in analysis.coarsening_reason
    assert estimate["coarsening_reason"] == analysis.coarsening_reason
    # The setting "answer": answered like any photo, at the configured level.
    upload_settings.UPLOAD_NON_LOCALIZABLE = "answer"
    analysis = _analyse(user, swc_bundles[1], photo)
    assert analysis.granularity == "fine" and not analysis.coarsening_reason


@pytest.mark.django_db(transaction=True)
def test_withhold_gives_a_non_localizable_photo_no_location_at_all(swc_training, swc_bundles, upload_settings, user,
                                                                   client):
    from predictor.models import UploadAudit

    root = swc_training[0]
    photo = sorted((root / "photos" / "images").glob("*.jpg"))[2].read_bytes()
    upload_settings.UPLOAD_GRANULARITY = "fine"
    upload_settings.UPLOAD_NON_LOCALIZABLE = "withhold"
    analysis = _analyse(user, swc_bundles[1], photo)  # the strict bundle: no photo is localizable
    assert analysis.status == "done" and analysis.granularity == "withheld"
    assert analysis.coarsening_reason.startswith("No location is given because the model judges this photo not "
                                                 "localizable (its neighbours agree too little: prediction density")
    by_type = {e["type"]: e for e in analysis.events}
    assert list(by_type) == ["scene", "partitions", "heatmap", "estimate", "refined", "cam", "done"]
    # The scene stays; nothing that carries a place does: no cell, no candidate, no point, no country, no map.
    assert by_type["scene"]["concept"] in ("indoor", "natural", "urban")
    assert by_type["partitions"]["partitionings"] == {} and by_type["heatmap"]["geojson"]["features"] == []
    estimate = by_type["estimate"]
    assert (estimate["lat"], estimate["lon"], estimate["place"], estimate["candidates"]) == (None, None, None, [])
    assert estimate["label"] == "No location given" and estimate["coarsening_reason"] == analysis.coarsening_reason
    assert by_type["refined"]["localizable"] is False and by_type["refined"]["lat"] is None
    assert by_type["cam"]["url"] is None and by_type["cam"]["cells"] == {}
    assert "no location is given" in by_type["cam"]["message"]
    summary = analysis.summary
    assert (summary["lat"], summary["lon"], summary["granularity"]) == (None, None, "withheld")
    assert UploadAudit.objects.get(analysis_id=analysis.pk).granularity == "withheld"
    # No coordinate, cell or country anywhere in what was stored for the page.
    assert _values(analysis.events, {"lat", "lon"}) <= {None}
    assert not _values(analysis.events, {"token", "country", "iso2", "geometry"})
    # The user's list of analyses shows the answer without coordinates, and says why.
    client.force_login(user)
    page = client.get("/analyses/").content.decode()
    assert "No location given" in page and "not localizable" in page
    page = client.get(f"/analyze/{analysis.pk}/").content.decode()
    assert "No location given." in page and analysis.coarsening_reason in page


def test_evaluate_selective_scores_an_swc_bundle_by_prediction_density(swc_training, swc_bundles, tmp_path, capsys):
    import csv

    from tests.train_synthetic import write_csv_dataset

    test_csv = write_csv_dataset(tmp_path / "test", 12, seed=32)  # other photos than the training ones
    meta = tmp_path / "meta.csv"
    lines = test_csv.read_text().splitlines()
    meta.write_text("IMG_ID,AUTHOR,LAT,LON,S3_Label\n" + "".join(f"{line},2\n".replace(",", ",x,", 1)
                                                              for line in lines[1:]))
    call_command("evaluate", "--meta", str(meta), "--images", str(tmp_path / "test" / "images"),
                 "--model", str(swc_bundles[1]), "--out", str(tmp_path / "out"), "--selective", "--batch-size", "4")
    out = capsys.readouterr().out
    # The strict bundle (conf_thres 1) calls no photo localizable: its own verdict, not --conf-thres.
    assert "localizable: 0 images (0.0%)" in out and "non-localizable: 12 images (100.0%)" in out
    table = list(csv.DictReader((tmp_path / "out" / "synthetic-swc-strict_selective.csv").open()))
    assert {r["score"] for r in table} == {"prediction density", "split: localizable", "split: non-localizable"}
    curve = [r for r in table if r["score"] == "prediction density"]
    assert float(curve[-1]["coverage"]) == 1.0 and int(curve[-1]["images"]) == 12
    assert (tmp_path / "out" / "synthetic-swc-strict_selective.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.django_db(transaction=True)
def test_a_bundle_with_a_background_collection_is_a_game_opponent(swc_bundles, upload_settings):
    from games import recompute, selectors, services
    from games.models import ModelGuess
    from predictor import registry, worker
    from predictor.ml.retrieval import BackgroundCollection
    from tests.game_factories import make_playable

    name = "synthetic-swc-bg"
    registry.install_bundle(swc_bundles[0], replace=True)
    images = make_playable(6)
    job = recompute.start_recompute(images=images, model_name=name)
    assert worker.run_job_here(job_id=job.queue_job_id, timeout_s=120)  # as a worker process would
    job.refresh_from_db()
    assert job.status == "done", job.message
    guesses = list(ModelGuess.objects.filter(model_name=name))
    assert len(guesses) == 6
    # Its guesses are refined points: positions of its background photos, not cell centres.
    stored = np.asarray(BackgroundCollection(swc_bundles[0] / "background").coords, dtype=np.float64)
    assert all(np.abs(stored - [g.lat, g.lon]).sum(axis=1).min() < 1e-3 for g in guesses)
    assert name in selectors.choosable_opponents()
    game = services.start_game(session_key="s" * 32, opponents=[name])
    assert game.opponents == [name]


# --- the page, in Chromium -----------------------------------------------------------------------------------------


@pytest.mark.browser
def test_the_page_shows_the_refined_line_and_a_withheld_answer(swc_training, swc_bundles, live_settings, page,
                                                               transactional_db, django_user_model, settings):
    from predictor import policy
    from tests.conftest import analysed_beside_live_server, browser_login

    base = live_settings.url
    user = django_user_model.objects.create_user(username="swc-viewer", password="a-long-test-password-9")
    policy.accept_terms(user)
    photo = sorted((swc_training[0] / "photos" / "images").glob("*.jpg"))[3].read_bytes()
    browser_login(page, base, "swc-viewer", "a-long-test-password-9")
    page.wait_for_selector("text=swc-viewer")

    # Fine level, localizable: the refined line gives PD, the verdict and the refined point, which is the estimate.
    shown = analysed_beside_live_server(live_settings, user, swc_bundles[0], photo, settings,
                                        UPLOAD_GRANULARITY="fine", UPLOAD_NON_LOCALIZABLE="country")
    refined = next(e for e in shown.events if e["type"] == "refined")
    page.goto(f"{base}/analyze/{shown.pk}/")
    page.wait_for_selector("#analysis-root[data-stage=done]", timeout=60_000)
    line = page.inner_text("#refined")
    assert line.startswith(f"Prediction density {100 * refined['density']:.1f} %: the model judges this photo "
                           f"localizable. Refined estimate {refined['lat']:.3f}, {refined['lon']:.3f}."), line
    assert "medoid of the densest cluster" in line
    assert page.inner_text("#estimate-coords") == f"{refined['lat']:.3f}, {refined['lon']:.3f}"
    assert page.locator(".confidence-circle").count() == 1 and page.inner_text("#granularity-text") == ""

    # Not localizable, and the setting withholds: no point, no circle, no cells, the reason instead.
    withheld = analysed_beside_live_server(live_settings, user, swc_bundles[1], photo, settings,
                                           UPLOAD_GRANULARITY="fine", UPLOAD_NON_LOCALIZABLE="withhold")
    assert withheld.granularity == "withheld"
    page.goto(f"{base}/analyze/{withheld.pk}/")
    page.wait_for_selector("#analysis-root[data-stage=done]", timeout=60_000)
    assert page.inner_text("#granularity-text") == "No location given."
    assert page.inner_text("#coarsening-note") == withheld.coarsening_reason
    assert "not localizable" in withheld.coarsening_reason
    assert page.inner_text("#estimate-label") == "No location given"
    assert not page.is_visible("#estimate-figures") and page.locator("#candidates li").count() == 0
    assert page.locator(".confidence-circle").count() == 0 and page.locator(".leaflet-marker-icon").count() == 0
    assert page.locator("path.heat-cell").count() == 0 and not page.is_visible("#layer-toggles")
    assert not page.is_visible("#partitions") and page.is_visible("#scene")
    assert page.inner_text("#refined").startswith("Prediction density ") and \
        "the model judges this photo not localizable. No location is given for this photo." in \
        page.inner_text("#refined")
    assert "no location is given" in page.inner_text("#cam-message") and not page.is_visible("#cam")
    page.goto(f"{base}/analyses/")
    row = page.locator(f"tr[data-analysis='{withheld.pk}']").inner_text()
    assert "No location given" in row and "not localizable" in row
    assert page.js_errors == []

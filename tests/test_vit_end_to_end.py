"""The vit kind from end to end on the CPU: tiny shards with segmentation maps, a tiny multi-task ViT trained a few
steps, exported with its segmentation network, installed and evaluated; then a photo uploaded and its scene (from
the ViT's own head), estimate, attention map and segmentation overlay received over the websocket."""
from __future__ import annotations

import csv
import io

import pytest
import torch
from channels.db import database_sync_to_async
from django.core.management import call_command
from django.test import Client
from PIL import Image

from predictor import inference, registry, worker
from predictor.models import Analysis
from predictor.ml.segmentation import PhotoSegmenter, SegmentationNetwork
from predictor.ml.train.cells import build_partitioning
from predictor.ml.train.loop import TrainConfig, train
from predictor.ml.train.shards import preprocess_photos
from tests.streaming import new_analysis, open_socket, receive_until, run_queued
from tests.train_synthetic import synthetic_photos

ORDER = ["scene", "partitions", "heatmap", "estimate", "cam", "segmentation", "done"]


@pytest.fixture(scope="module")
def trained_vit(tmp_path_factory):
    """(bundle path, checkpoint) of a tiny ViT trained 2 x 3 steps on RGB + segmentation shards."""
    root = tmp_path_factory.mktemp("vit-e2e")
    photos = list(synthetic_photos(48, seed=21, size=(96, 80)))
    cells = build_partitioning([p[1] for p in photos], [p[2] for p in photos], tau_min=3, tau_max=1000,
                               name="coarse")
    cells.to_csv(root / "coarse.csv")
    torch.manual_seed(0)
    segmentation = SegmentationNetwork("tiny", 21)
    torch.save(segmentation.net.state_dict(), root / "segmenter.pth")
    preprocess_photos(photos, root / "shards", partitionings=[cells], val_fraction=0.25, samples_per_shard=16,
                      segmenter=PhotoSegmenter(segmentation))
    with open(root / "scenes.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["IMG_ID", "S3_Label"])
        writer.writerows([p[3], i % 3] for i, p in enumerate(photos))
    result = train(TrainConfig(
        train_shards=str(root / "shards" / "train"), val_shards=str(root / "shards" / "val"),
        partitionings=[str(root / "coarse.csv")], output_dir=str(root / "run"), backbone="vit_tiny", epochs=2,
        batch_size=8, lr=0.01, milestones=(1,), crop_size=224, workers=0, progress=False,
        max_steps_per_epoch=3, scene_labels=str(root / "scenes.csv"), segmentation=True))
    assert result["steps"] == [3, 3]
    call_command("export_vit", "--checkpoint", result["best"], "--name", "vit-e2e", "--output",
                 str(root / "vit-e2e"), "--segmentation", str(root / "segmenter.pth"), "--training-data",
                 "48 synthetic colour photos")
    return root / "vit-e2e", root


def test_exported_bundle_states_what_it_is_and_evaluates(trained_vit, tmp_path, capsys):
    bundle, root = trained_vit
    card = (bundle / "MODEL_CARD.md").read_text()
    assert "vit_tiny" in card and "segmentation map from tiny (21 classes)" in card
    assert "48 synthetic colour photos" in card and "Scene head: 3 classes, trained on" in card
    assert "UNTRAINED" not in card.split("## Architecture")[0]
    images = tmp_path / "images"
    images.mkdir()
    with open(tmp_path / "meta.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["IMG_ID", "LAT", "LON", "S3_Label"])
        for image, lat, lon, image_id in synthetic_photos(6, seed=22, size=(96, 80)):
            image.save(images / f"{image_id}.jpg")
            writer.writerow([f"{image_id}.jpg", lat, lon, 2])
    call_command("evaluate", "--meta", str(tmp_path / "meta.csv"), "--images", str(images), "--model", str(bundle),
                 "--batch-size", "4", "--out", str(tmp_path / "out"))
    out = capsys.readouterr().out
    assert any(line.split()[:2] == ["all", "6"] for line in out.splitlines())


@pytest.fixture
def active_vit(trained_vit, settings):
    settings.EMBEDDED_WORKER = False
    settings.UPLOAD_GRANULARITY = "fine"
    settings.UPLOAD_COARSEN_INDOOR = False
    worker.stop_embedded_worker()
    call_command("install_model", str(trained_vit[0]))
    inference.reset_engine()
    yield
    inference.reset_engine()


@pytest.mark.django_db(transaction=True)
async def test_upload_streams_scene_estimate_attention_and_segmentation(active_vit, user):
    assert await database_sync_to_async(registry.active_bundle_name)() == "vit-e2e"
    analysis = await database_sync_to_async(new_analysis)(user)
    socket = await open_socket(analysis.pk, user)
    try:
        await socket.receive_json_from(timeout=5)  # the queued status
        assert await run_queued() == 1
        streamed = await receive_until(socket, {"done", "error"}, timeout=60)
    finally:
        await socket.disconnect()
    assert [m["type"] for m in streamed] == ORDER, streamed[-1]
    scene, partitions, heatmap, estimate, cam, segmentation, done = streamed
    # The scene is the ViT's own 3-way head: no Places365 network, its categories are the S3 concepts.
    assert scene["model_name"] == "vit-e2e" and scene["untrained"] is False and scene["scene_untrained"] is False
    assert {c["label"] for c in scene["places365"]} == {"indoor", "natural", "urban"}
    assert scene["places365"][0]["label"] == scene["concept"]
    assert -90 <= estimate["lat"] <= 90 and -180 <= estimate["lon"] <= 180 and estimate["label"]
    assert cam["url"] == f"/analyze/{analysis.pk}/cam.png" and "attention" in cam["caption"]
    assert segmentation["url"] == f"/analyze/{analysis.pk}/segmentation.png"
    assert segmentation["classes"] and abs(sum(c["share"] for c in segmentation["classes"]) - 1) < 0.01
    stored = await database_sync_to_async(Analysis.objects.get)(pk=analysis.pk)
    assert stored.status == "done" and stored.events == streamed

    def fetch(url, who):
        client = Client()
        client.force_login(who)
        return client.get(url)

    for url in (cam["url"], segmentation["url"]):
        response = await database_sync_to_async(fetch)(url, user)
        assert response.status_code == 200 and response["Content-Type"] == "image/png"
        overlay = Image.open(io.BytesIO(b"".join(response.streaming_content)
                                        if response.streaming else response.content))
        assert overlay.mode == "RGBA" and overlay.size == (320, 240)  # the photo's shape, no photo pixels


@pytest.mark.django_db(transaction=True)
def test_the_trained_vit_becomes_a_game_opponent(trained_vit, settings):
    from games import recompute, selectors
    from games.models import ModelGuess
    from predictor import worker
    from tests.game_factories import MODEL, make_playable

    registry.install_bundle(trained_vit[0], activate=False)
    inference.reset_engine()
    try:
        images = make_playable(3)
        job = recompute.start_recompute(images=images, model_name="vit-e2e")
        assert worker.run_job_here(job_id=job.queue_job_id, timeout_s=120)  # as a worker process would
        job.refresh_from_db()
        assert job.status == "done", job.message
    finally:
        inference.reset_engine()
    guesses = ModelGuess.objects.filter(model_name="vit-e2e")
    assert guesses.count() == 3
    assert all(-90 <= g.lat <= 90 and -180 <= g.lon <= 180 for g in guesses)
    assert set(selectors.choosable_opponents()) == {MODEL, "vit-e2e"}


@pytest.mark.browser
def test_the_page_shows_the_attention_map_and_the_segmentation_overlay(trained_vit, live_settings, page,
                                                                        transactional_db, django_user_model,
                                                                        settings):
    from predictor import policy
    from tests.conftest import analysed_beside_live_server, browser_login

    viewer = django_user_model.objects.create_user(username="vit-viewer", password="a-long-test-password-7")
    policy.accept_terms(viewer)
    image, *_ = next(iter(synthetic_photos(1, seed=23, size=(320, 240))))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG")
    analysis = analysed_beside_live_server(live_settings, viewer, trained_vit[0], buffer.getvalue(), settings,
                                           UPLOAD_GRANULARITY="fine")
    segmentation = next(e for e in analysis.events if e["type"] == "segmentation")
    browser_login(page, live_settings.url, "vit-viewer", "a-long-test-password-7")
    page.wait_for_selector("text=vit-viewer")
    page.goto(f"{live_settings.url}/analyze/{analysis.pk}/")
    page.wait_for_selector("#analysis-root[data-stage=done]", timeout=60_000)
    # The attention map is on, over the photo's place, and says what it is.
    page.wait_for_function("document.getElementById('cam').naturalWidth > 0")
    assert page.is_visible("#cam") and "the model's attention" in page.inner_text("#cam-caption")
    # The segmentation the model took as its second input: off until asked for, then drawn, with its legend.
    assert page.is_visible("#segmentation") and not page.is_visible("#segmentation-overlay")
    legend = page.locator("#segmentation-classes li").all_inner_texts()
    assert len(legend) == len(segmentation["classes"])
    assert legend[0].startswith(segmentation["classes"][0]["label"])
    page.check("#segmentation-toggle")
    page.wait_for_function("document.getElementById('segmentation-overlay').naturalWidth > 0")
    assert page.is_visible("#segmentation-overlay")
    page.uncheck("#segmentation-toggle")
    assert not page.is_visible("#segmentation-overlay")
    assert page.js_errors == []

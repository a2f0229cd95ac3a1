"""Per-cell activation maps: the engine computes them from one pass of the network, an upload stores them only for
the cells its owner may see (limited like the rest of the answer), only the owner can fetch them, and they are
deleted with the analysis."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from django.core.files.storage import default_storage
from django.test import Client
from django.urls import reverse
from PIL import Image

from predictor import inference, registry, services, worker
from predictor.ml.kinds import load_bundle
from predictor.ml.cam import class_activation_map, class_activation_maps
from predictor.ml.engine import InferenceEngine
from predictor.ml.prediction import HIERARCHY
from predictor.ml.preprocess import CropSpec, crop_geometry
from predictor.models import Analysis
from tests.conftest import make_jpeg


# --- the engine ------------------------------------------------------------------------------------------------

def test_several_class_maps_match_one_at_a_time():
    geometry = crop_geometry(400, 300, CropSpec())
    torch.manual_seed(3)
    features = torch.rand(5, 8, 7, 7)
    weights = torch.randn(3, 8)
    maps = class_activation_maps(features, weights, geometry)
    assert maps.shape == (3, 256, 341) and maps.dtype == np.float32
    for row in range(3):
        assert np.allclose(maps[row], class_activation_map(features, weights[row], geometry), atol=1e-5)


def test_engine_returns_a_map_per_top_cell_and_classes_differ(tiny_bundle):
    model = load_bundle(tiny_bundle)
    with InferenceEngine(model, top_k=6) as engine:
        prediction = engine.submit(make_jpeg(96, 80), cam=True, cam_cells=3).result(timeout=60)
        plain = engine.submit(make_jpeg(96, 80)).result(timeout=60)
    assert plain.cell_cams == {} and plain.cam is None  # nothing computed unless asked for
    finest = model.partitioning_names[-1]
    expected = {(name, c.class_index) for name in model.partitioning_names for c in prediction.top_cells[name][:3]}
    expected |= {(finest, c.class_index) for c in prediction.top_cells[HIERARCHY][:3]}
    assert set(prediction.cell_cams) == expected
    for cam in prediction.cell_cams.values():
        assert cam.shape == (256, 307) and cam.dtype == np.float32  # 96x80 photo -> 307x256
        assert cam.min() >= 0.0 and cam.max() == pytest.approx(1.0)
    coarse = [prediction.cell_cams[("coarse", c.class_index)] for c in prediction.top_cells["coarse"][:3]]
    assert not np.allclose(coarse[0], coarse[1], atol=1e-3) and not np.allclose(coarse[1], coarse[2], atol=1e-3)
    # The estimate's overall map is the one of the winning hierarchy cell's fine class.
    best = prediction.top_cells[HIERARCHY][0].class_index
    assert np.array_equal(prediction.cam, prediction.cell_cams[(finest, best)])


# --- uploads ---------------------------------------------------------------------------------------------------

@pytest.fixture
def tiny_model(tiny_bundle, settings):
    settings.EMBEDDED_WORKER = False
    settings.UPLOAD_COARSEN_INDOOR = False  # the random model may call any photo indoor
    settings.UPLOAD_CELL_CAMS = 4
    worker.stop_embedded_worker()
    registry.install_bundle(tiny_bundle)
    yield
    inference.reset_engine()


def analysed(user) -> Analysis:
    analysis = services.create_analysis(owner=user, data=make_jpeg(320, 240))
    worker.Worker(worker_id="w").run_once()
    analysis.refresh_from_db()
    assert analysis.status == "done", analysis.error_message
    return analysis


def event(analysis: Analysis, kind: str) -> dict:
    [found] = [e for e in analysis.events if e["type"] == kind]
    return found


def fetch(client: Client, url: str) -> bytes:
    response = client.get(url)
    assert response.status_code == 200 and response["Content-Type"] == "image/png"
    return b"".join(response.streaming_content)


@pytest.mark.django_db
def test_region_level_links_maps_of_the_top_coarse_cells_only(tiny_model, user, settings):
    settings.UPLOAD_GRANULARITY = "region"
    analysis = analysed(user)
    cam = event(analysis, "cam")
    assert set(cam["cells"]) == {"coarse"}
    coarse_shown = [c["token"] for c in event(analysis, "partitions")["partitionings"]["coarse"]]
    # Compared as sets: the stored event is a token -> URL lookup, and PostgreSQL (jsonb) re-orders its keys.
    assert set(cam["cells"]["coarse"]) == set(coarse_shown[:4])
    heat_tokens = {f["properties"]["token"] for f in event(analysis, "heatmap")["geojson"]["features"]}
    assert set(cam["cells"]["coarse"]) <= heat_tokens  # each one is a cell the user can click
    client = Client()
    client.force_login(user)
    maps = [fetch(client, url) for url in cam["cells"]["coarse"].values()]
    assert all(Image.open(io.BytesIO(png)).format == "PNG" for png in maps)
    assert len(set(maps)) == len(maps)  # one map per cell, not the same picture four times
    # The overall map is no longer the fine estimate's: it is the most probable coarse cell's, which is also the
    # estimate shown, and the caption names that cell and place.
    assert fetch(client, cam["url"]) == fetch(client, cam["cells"]["coarse"][coarse_shown[0]])
    estimate = event(analysis, "estimate")
    assert estimate["candidates"][0]["token"] == coarse_shown[0]
    assert cam["caption"] == f"the estimated coarse cell {coarse_shown[0]} ({estimate['label']})"


@pytest.mark.django_db
def test_country_level_links_no_cell_maps(tiny_model, user, settings):
    settings.UPLOAD_GRANULARITY = "country"
    analysis = analysed(user)
    cam = event(analysis, "cam")
    assert cam["cells"] == {} and services.cell_cam_files(analysis) == []
    # The map of the most probable cell inside the estimated country (made for it if it is not among the top
    # cells with maps); the caption names the country, no cell.
    estimate = event(analysis, "estimate")
    assert cam["url"] and cam["caption"] == f"the most probable area in {estimate['label']}"
    client = Client()
    client.force_login(user)
    assert client.get(reverse("analysis-cell-cam", args=[analysis.pk, 0])).status_code == 404


@pytest.mark.django_db
def test_fine_level_links_maps_for_every_layer(tiny_model, user, settings):
    settings.UPLOAD_GRANULARITY = "fine"
    analysis = analysed(user)
    cells = event(analysis, "cam")["cells"]
    assert set(cells) == {"coarse", "middle", "fine", HIERARCHY}
    for layer, cams in cells.items():
        top = [c["token"] for c in event(analysis, "partitions")["partitionings"][layer]]
        assert set(cams) == set(top[:4])
    client = Client()
    client.force_login(user)
    hierarchy_top = event(analysis, "partitions")["partitionings"][HIERARCHY][0]["token"]
    fine_best = cells[HIERARCHY][hierarchy_top]
    assert fetch(client, event(analysis, "cam")["url"]) == fetch(client, fine_best)


@pytest.mark.django_db
def test_only_the_owner_gets_a_cell_map(tiny_model, user, other_user, settings):
    settings.UPLOAD_GRANULARITY = "region"
    analysis = analysed(user)
    url = reverse("analysis-cell-cam", args=[analysis.pk, 0])
    assert url in event(analysis, "cam")["cells"]["coarse"].values()
    stranger = Client()
    stranger.force_login(other_user)
    assert stranger.get(url).status_code == 404
    anonymous = Client().get(url)
    assert anonymous.status_code == 302 and "/login/" in anonymous["Location"]
    owner = Client()
    owner.force_login(user)
    assert owner.get(url).status_code == 200
    assert owner.get(reverse("analysis-cell-cam", args=[analysis.pk, 99])).status_code == 404


@pytest.mark.django_db
@pytest.mark.parametrize("how", ["page", "account"])
def test_cell_maps_are_deleted_with_the_analysis(tiny_model, user, settings, how):
    settings.UPLOAD_GRANULARITY = "region"
    analysis = analysed(user)
    names = services.cell_cam_files(analysis)
    assert len(names) == 4 and all(default_storage.exists(n) for n in names)
    if how == "page":
        client = Client()
        client.force_login(user)
        assert client.post(reverse("analysis-delete", args=[analysis.pk])).status_code == 302
    else:  # account deletion (the site's page and the admin) goes through the same service
        services.delete_account(user=user)
        assert not Analysis.objects.filter(pk=analysis.pk).exists()
    assert not any(default_storage.exists(n) for n in names)
    assert not default_storage.exists(analysis.cam.name)

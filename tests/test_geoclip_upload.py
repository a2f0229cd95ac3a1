"""A GeoCLIP bundle, once installed and active, is the model behind upload analysis like an ISN bundle."""
from __future__ import annotations

import pytest

from predictor import inference, registry, services, worker
from predictor.models import Analysis
from tests.conftest import make_jpeg

ORDER = ["scene", "partitions", "heatmap", "estimate", "cam", "done"]


@pytest.fixture
def active_geoclip(tiny_geoclip, settings):
    settings.EMBEDDED_WORKER = False
    worker.stop_embedded_worker()
    registry.install_bundle(tiny_geoclip)
    inference.reset_engine()
    yield
    inference.reset_engine()


@pytest.mark.django_db
def test_an_upload_is_analysed_by_the_active_geoclip_model(active_geoclip, user, settings):
    settings.UPLOAD_GRANULARITY = "region"
    analysis = services.create_analysis(owner=user, data=make_jpeg(320, 240))
    assert worker.Worker(worker_id="w").run_once() == 1
    analysis = Analysis.objects.get(pk=analysis.pk)
    assert analysis.status == "done", analysis.error_message
    assert analysis.model_name == "geoclip-tiny"
    assert [e["type"] for e in analysis.events] == ORDER
    estimate = next(e for e in analysis.events if e["type"] == "estimate")
    assert -90 <= estimate["lat"] <= 90 and -180 <= estimate["lon"] <= 180 and estimate["label"]
    assert 0 <= estimate["confidence"] <= 1
    heatmap = next(e for e in analysis.events if e["type"] == "heatmap")
    if analysis.granularity == "region":  # coarse cells only, as for an ISN bundle
        assert heatmap["cells"] > 0
        assert {f["properties"]["partitioning"] for f in heatmap["geojson"]["features"]} == {"coarse"}
    cam = next(e for e in analysis.events if e["type"] == "cam")
    assert cam["url"] is None and cam["message"]  # GeoCLIP gives no activation map, and the page says so

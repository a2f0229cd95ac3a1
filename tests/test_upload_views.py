"""Pages around the analysis: the live page, the user's list, owner-only files, deletion, and the explorers."""
from __future__ import annotations

import json
import re

import pytest
from django.core.files.storage import default_storage
from django.urls import reverse

from predictor import inference, registry, services, worker
from predictor.models import Analysis
from tests.conftest import make_jpeg


@pytest.fixture
def tiny_model(tiny_bundle, settings):
    settings.EMBEDDED_WORKER = False  # this process must not run jobs behind the test's back
    worker.stop_embedded_worker()
    registry.install_bundle(tiny_bundle)
    yield
    inference.reset_engine()


@pytest.fixture
def finished(tiny_model, user) -> Analysis:
    analysis = services.create_analysis(owner=user, data=make_jpeg(200, 150), keep_photo=True)
    worker.Worker(worker_id="w").run_once()
    analysis.refresh_from_db()
    assert analysis.status == "done"
    return analysis


@pytest.mark.django_db
def test_upload_redirects_to_the_live_page_which_says_the_model_is_untrained(client, user, tiny_model):
    client.force_login(user)
    from django.core.files.uploadedfile import SimpleUploadedFile

    response = client.post(reverse("analyze"), {"photo": SimpleUploadedFile("a.jpg", make_jpeg(120, 90))})
    analysis = Analysis.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/analyze/{analysis.pk}/"
    worker.Worker(worker_id="w").run_once()
    page = client.get(response["Location"]).content.decode()
    assert f'data-socket-path="/ws/analysis/{analysis.pk}/"' in page
    assert "Untrained model." in page and 'id="untrained-banner" role="alert" hidden' not in page


@pytest.mark.django_db
def test_my_analyses_lists_only_mine_with_estimate_and_scene(client, user, other_user, finished):
    services.create_analysis(owner=other_user, data=make_jpeg(80, 60))
    client.force_login(user)
    page = client.get(reverse("my-analyses")).content.decode()
    assert page.count("data-analysis=") == 1
    assert finished.summary["label"] in page and finished.summary["concept"] in page
    assert reverse("analysis-thumbnail", args=[finished.pk]) in page


@pytest.mark.django_db
def test_files_are_served_to_the_owner_only(client, user, other_user, finished):
    urls = [reverse(name, args=[finished.pk]) for name in
            ("analysis", "analysis-photo", "analysis-thumbnail", "analysis-cam")]
    client.force_login(other_user)
    assert [client.get(url).status_code for url in urls] == [404, 404, 404, 404]
    client.force_login(user)
    responses = [client.get(url) for url in urls]
    assert [r.status_code for r in responses] == [200, 200, 200, 200]
    assert responses[3]["Content-Type"] == "image/png"
    assert b"".join(responses[3].streaming_content).startswith(b"\x89PNG")
    assert "private" in responses[1]["Cache-Control"]


@pytest.mark.django_db
def test_delete_removes_the_row_and_every_file(client, user, other_user, finished):
    names = [finished.image.name, finished.thumbnail.name, finished.cam.name]
    assert all(default_storage.exists(n) for n in names)
    client.force_login(other_user)
    assert client.post(reverse("analysis-delete", args=[finished.pk])).status_code == 404
    assert Analysis.objects.filter(pk=finished.pk).exists()
    client.force_login(user)
    assert client.get(reverse("analysis-delete", args=[finished.pk])).status_code == 405
    response = client.post(reverse("analysis-delete", args=[finished.pk]))
    assert response.status_code == 302 and response["Location"] == reverse("my-analyses")
    assert not Analysis.objects.filter(pk=finished.pk).exists()
    assert not any(default_storage.exists(n) for n in names)


@pytest.mark.django_db
def test_deleting_while_the_worker_runs_leaves_no_files(tiny_model, user, monkeypatch):
    analysis = services.create_analysis(owner=user, data=make_jpeg(120, 90))
    real = services._emit

    def delete_midway(target, event, **kwargs):
        if event["type"] == "heatmap":
            services.delete_analysis(analysis=Analysis.objects.get(pk=target.pk))
        return real(target, event, **kwargs)

    monkeypatch.setattr(services, "_emit", delete_midway)
    worker.Worker(worker_id="w").run_once()
    assert not Analysis.objects.exists()
    media = default_storage.path("analyses")
    import os

    assert [f for _, _, files in os.walk(media) for f in files] == []


@pytest.mark.django_db
def test_daily_quota_and_kill_switch_refuse_clearly(client, user, settings):
    from django.core.files.uploadedfile import SimpleUploadedFile

    client.force_login(user)
    settings.UPLOAD_DAILY_QUOTA = 1
    first = client.post(reverse("analyze"), {"photo": SimpleUploadedFile("a.jpg", make_jpeg())})
    second = client.post(reverse("analyze"), {"photo": SimpleUploadedFile("a.jpg", make_jpeg())})
    assert first.status_code == 302 and second.status_code == 429
    assert "daily limit" in second.content.decode()
    settings.UPLOADS_ENABLED = False
    settings.UPLOAD_DAILY_QUOTA = 0
    paused = client.post(reverse("analyze"), {"photo": SimpleUploadedFile("a.jpg", make_jpeg())})
    assert paused.status_code == 503 and "paused" in paused.content.decode()
    assert Analysis.objects.count() == 1


@pytest.mark.django_db
def test_nav_links_for_logged_in_users(client, user):
    anonymous = client.get(reverse("partition-explorer")).content.decode()
    assert 'href="/explore/partitions/"' in anonymous and 'href="/analyze/"' not in anonymous
    client.force_login(user)
    page = client.get(reverse("partition-explorer")).content.decode()
    assert 'href="/analyze/"' in page and 'href="/analyses/"' in page


@pytest.mark.django_db
def test_partition_explorer_serves_each_partitioning_with_counts_and_parents(client, tiny_model):
    page = client.get(reverse("partition-explorer")).content.decode()
    for name in ("coarse", "middle", "fine"):
        assert f'value="{name}"' in page
    model = inference.get_model()
    fine = model.partitionings[-1]
    response = client.get(reverse("partition-cells", args=["fine"]))
    data = json.loads(b"".join(response.streaming_content) if response.streaming else response.content)
    assert response.status_code == 200 and len(data["features"]) == len(fine)
    first = data["features"][0]["properties"]
    assert first["token"] == fine.tokens[0] and first["images"] == int(fine.counts[0])
    assert first["level"] == int(fine.levels[0])
    # Every fine cell lies inside one coarse and one middle cell of the tiny bundle.
    assert all(set(f["properties"]["parents"]) == {"coarse", "middle"} for f in data["features"])
    assert client.get(reverse("partition-cells", args=["nope"])).status_code == 404


@pytest.mark.django_db
def test_partition_explorer_without_a_model_says_so(client, settings):
    inference.reset_engine()
    page = client.get(reverse("partition-explorer")).content.decode()
    assert "No model is installed" in page


@pytest.mark.django_db
def test_game_image_explorer_shows_staff_everything_and_players_what_they_played(client, user, other_user):
    from games.models import Game, GameImage, ModelGuess, Round
    from django.utils import timezone

    played = GameImage.objects.create(lat=48.85, lon=2.35, source_id="a", p_indoor=0.1, p_natural=0.2, p_urban=0.7)
    unseen = GameImage.objects.create(lat=-33.9, lon=151.2, source_id="b", p_indoor=0.1, p_natural=0.8, p_urban=0.1)
    ModelGuess.objects.create(image=played, model_name="m", lat=50.0, lon=3.0, distance_km=150.0)
    game = Game.objects.create(user=user, seed=1, challenge_token="tok")
    Round.objects.create(game=game, index=0, image=played, photo_token="p1", guessed_at=timezone.now())
    Round.objects.create(game=game, index=1, image=unseen, photo_token="p2")  # shown but not guessed yet

    def points(who):
        client.force_login(who)
        page = client.get(reverse("game-image-explorer")).content.decode()
        match = re.search(r'<script id="game-image-points" type="application/json">(.*?)</script>', page, re.S)
        return json.loads(match.group(1))

    mine = points(user)
    assert [(p["id"], p["scene"], p["errors_km"]) for p in mine] == [(played.pk, "urban", {"m": 150.0})]
    assert points(other_user) == []
    other_user.is_staff = True
    other_user.save()
    assert {p["id"] for p in points(other_user)} == {played.pk, unseen.pk}

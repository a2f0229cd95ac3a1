"""The admin can compute the guesses of an installed model that is not the active one, so it can be an opponent."""
from __future__ import annotations

import pytest
from django.urls import reverse

from games import recompute, selectors, services
from games.curation import CurationError
from games.models import ModelGuess, RecomputeJob
from predictor import inference, registry, worker
from tests.game_factories import MODEL, make_playable

CHANGELIST = reverse("admin:games_gameimage_changelist")
SECOND = "second-tiny"


@pytest.fixture
def two_models(tiny_bundle, settings):
    registry.install_bundle(tiny_bundle)
    registry.install_bundle(tiny_bundle, name=SECOND, activate=False)
    inference.reset_engine()
    yield registry.active_bundle_name()
    inference.reset_engine()


@pytest.mark.django_db(transaction=True)
def test_recompute_of_an_installed_model_that_is_not_active(admin_client, two_models):
    images = make_playable(6)
    page = admin_client.get(CHANGELIST).content.decode()
    assert f"Recompute {SECOND}&#x27;s guesses" in page
    assert f"recompute_guesses_of_{two_models}" not in page  # the active model has the usual action
    response = admin_client.post(CHANGELIST, {"action": f"recompute_guesses_of_{SECOND}",
                                              "_selected_action": [image.pk for image in images]})
    job = RecomputeJob.objects.get()
    assert response.status_code == 302 and job.model_name == SECOND
    worker.Worker(worker_id="w").run_once()
    job.refresh_from_db()
    assert job.status == "done", job.message
    assert ModelGuess.objects.filter(model_name=SECOND).count() == 6
    assert not ModelGuess.objects.filter(model_name=two_models).exists()
    assert registry.active_bundle_name() == two_models  # the active model did not change
    # Both bundles are untrained (random weights): their guesses are stored, yet neither is ever a game opponent.
    assert selectors.choosable_opponents() == [MODEL]
    with pytest.raises(services.GameError, match=f"unknown opponent '{SECOND}'"):
        services.start_game(session_key="s" * 32, opponents=[MODEL, SECOND])


@pytest.mark.django_db
def test_recompute_of_a_model_that_is_not_installed_is_refused(two_models):
    images = make_playable(1)
    with pytest.raises(CurationError, match="'nope' is not installed"):
        recompute.start_recompute(images=images, model_name="nope")
    assert not RecomputeJob.objects.exists()

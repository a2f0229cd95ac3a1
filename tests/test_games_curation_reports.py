"""Players report a photo after its reveal; reports wait in the admin's review queue until staff resolve them."""
from __future__ import annotations

import json
import re

import pytest
from django.contrib.admin.models import LogEntry
from django.test import Client
from django.urls import reverse

from games.models import GameImage, ImageReport
from tests.game_factories import make_playable

pytestmark = pytest.mark.django_db


def post(client, url, data):
    return client.post(url, json.dumps(data), content_type="application/json")


@pytest.fixture
def game(client, settings):
    settings.GAME_ROUNDS = 3
    make_playable(3)
    response = post(client, reverse("game-api-start"), {})
    assert response.status_code == 201
    return response.json()["key"]


def listed(html: str) -> set[int]:
    return {int(pk) for pk in re.findall(r'name="_selected_action" value="(\d+)"', html)}


def report(client, key, **data):
    return post(client, reverse("game-api-report", args=[key]), data)


def test_a_guessed_round_can_be_reported_once(client, game):
    assert report(client, game, round=0, reason="wrong_location").status_code == 400  # not guessed yet
    assert not ImageReport.objects.exists()
    post(client, reverse("game-api-guess", args=[game]), {"round": 0, "lat": 10, "lon": 10})
    response = report(client, game, round=0, reason="wrong_location", comment="This is Lyon, not Paris")
    assert response.status_code == 201
    stored = ImageReport.objects.get()
    assert (stored.reason, stored.comment, stored.resolved) == ("wrong_location", "This is Lyon, not Paris", False)
    assert stored.image_id == stored.round.image_id and stored.round.index == 0
    again = report(client, game, round=0, reason="other")
    assert again.status_code == 400 and "already been reported" in again.json()["error"]


def test_bad_reports_are_refused_with_a_reason(client, game):
    post(client, reverse("game-api-guess", args=[game]), {"round": 0, "lat": 10, "lon": 10})
    assert "unknown reason" in report(client, game, round=0, reason="boring").json()["error"]
    assert "no round 8" in report(client, game, round=8, reason="other").json()["error"]
    assert "`round` must be a JSON integer" in report(client, game, reason="other").json()["error"]
    assert "at most 1000" in report(client, game, round=0, reason="other", comment="x" * 1001).json()["error"]
    assert report(Client(), game, round=0, reason="other").status_code == 404  # someone else's game
    assert not ImageReport.objects.exists()


def test_the_play_page_offers_the_report_button(client, game):
    html = client.get(reverse("game-play", args=[game])).content.decode()
    assert 'id="report-open"' in html and reverse("game-api-report", args=[game]) in html
    assert '<option value="wrong_location">The true location looks wrong</option>' in html


def test_staff_see_the_queue_and_resolve_or_withdraw(client, game, admin_client):
    for index in (0, 1):
        post(client, reverse("game-api-guess", args=[game]), {"round": index, "lat": 10, "lon": 10})
        post(client, reverse("game-api-next", args=[game]), {})
        report(client, game, round=index, reason="offensive" if index else "broken")
    broken, offensive = ImageReport.objects.order_by("round__index")
    changelist = reverse("admin:games_imagereport_changelist")
    queue = admin_client.get(changelist).content.decode()
    assert listed(queue) == {broken.pk, offensive.pk}
    admin_client.post(changelist, {"action": "resolve", "_selected_action": [broken.pk]})
    admin_client.post(changelist, {"action": "resolve_and_deactivate", "_selected_action": [offensive.pk]})
    broken.refresh_from_db()
    offensive.refresh_from_db()
    assert broken.resolved and broken.resolved_by.username == "admin" and broken.resolution == "kept"
    assert offensive.resolved and offensive.resolution == "image withdrawn"
    assert GameImage.objects.get(pk=broken.image_id).active
    assert not GameImage.objects.get(pk=offensive.image_id).active
    assert listed(admin_client.get(changelist, {"resolved__exact": "0"}).content.decode()) == set()
    assert listed(admin_client.get(changelist, {"resolved__exact": "1"}).content.decode()) == {broken.pk,
                                                                                               offensive.pk}
    messages = [e.get_change_message() for e in LogEntry.objects.order_by("id")]
    assert "Resolved: image kept" in messages and "Deactivated after a player report" in messages

"""Issue 13 section 4: the game API's inputs and errors (JSON integers, rounds counted from 0, opponents, JSON for
every /api/ error, rate-limited starts) and the offline basemap's caching."""
from __future__ import annotations

import json

import pytest
from django.test import Client
from django.urls import reverse

from games.models import Game
from tests.game_factories import make_playable

pytestmark = pytest.mark.django_db


def post(client, url, body=None, **extra):
    data = body if isinstance(body, (bytes, str)) else json.dumps(body if body is not None else {})
    return client.post(url, data=data, content_type="application/json", HTTP_ACCEPT="application/json", **extra)


def start(client) -> str:
    response = post(client, reverse("game-api-start"))
    assert response.status_code == 201, response.content
    return response.json()["key"]


@pytest.mark.parametrize("round_value", [1.9, 0.0, "0", True, None, [0]])
def test_round_must_be_a_json_integer(client, round_value):
    make_playable(6)
    key = start(client)
    response = post(client, reverse("game-api-guess", args=[key]), {"round": round_value, "lat": 1, "lon": 2})
    assert response.status_code == 400
    assert "`round` must be a JSON integer" in response.json()["error"]
    assert not Game.objects.get(key=key).rounds.filter(guessed_at__isnull=False).exists()


def test_lat_and_lon_must_be_json_numbers(client):
    make_playable(6)
    key = start(client)
    for body in ({"round": 0, "lat": "1", "lon": 2}, {"round": 0, "lat": 1, "lon": None}):
        response = post(client, reverse("game-api-guess", args=[key]), body)
        assert response.status_code == 400 and "must be a JSON number" in response.json()["error"]
    assert post(client, reverse("game-api-guess", args=[key]), {"round": 0, "lat": 1, "lon": 2}).status_code == 200


def test_messages_count_rounds_from_zero_as_the_api_does(client):
    make_playable(6)
    key = start(client)
    guess = reverse("game-api-guess", args=[key])
    assert post(client, guess, {"round": 1, "lat": 1, "lon": 2}).json()["error"] == \
        "round 1 is not the current round (0)"
    assert post(client, guess, {"round": 0, "lat": 1, "lon": 2}).status_code == 200
    assert post(client, guess, {"round": 0, "lat": 1, "lon": 2}).json()["error"] == "round 0 has already been guessed"
    assert post(client, guess, {"round": 1, "lat": 1, "lon": 2}).json()["error"] == "round 1 has not been shown yet"
    assert post(client, guess, {"round": 7, "lat": 1, "lon": 2}).json()["error"] == \
        "this game has rounds 0 to 4, not 7"


def test_every_api_error_is_json(client, settings):
    make_playable(6)
    key = start(client)
    other = Client()
    cases = {
        404: other.get(reverse("game-api-state", args=[key]), HTTP_ACCEPT="text/html"),  # someone else's game
        405: client.get(reverse("game-api-guess", args=[key]), HTTP_ACCEPT="text/html"),
        400: post(client, reverse("game-api-guess", args=[key]), b"{not json"),
        413: post(client, reverse("game-api-nickname", args=[key]),
                  b'{"nickname": "' + b"x" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 10) + b'"}'),
    }
    csrf_client = Client(enforce_csrf_checks=True)
    cases[403] = csrf_client.post(reverse("game-api-start"), data="{}", content_type="application/json")
    for status, response in cases.items():
        assert response.status_code == status, (status, response.content[:200])
        assert response["Content-Type"] == "application/json", status
        assert response.json()["error"], status
    assert "POST" in cases[405]["Allow"] and "use POST" in cases[405].json()["error"]


def test_starting_games_is_rate_limited_per_ip_and_per_session(client, settings):
    make_playable(6)
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "game_start": (5, 60)}
    statuses = [post(client, reverse("game-api-start")).status_code for _ in range(7)]
    assert statuses == [201] * 5 + [429] * 2
    refused = post(client, reverse("game-api-start"))
    # The sliding window weighs the previous window's count as if spread evenly, so five games at the start of a
    # window are forgotten 60 s + 60/5 s later at the latest (core.ratelimit's _retry_after).
    assert refused["Content-Type"] == "application/json" and 0 < int(refused["Retry-After"]) <= 60 + 60 // 5
    assert "Too many new games" in refused.json()["error"]
    assert Game.objects.count() == 5
    # The home page's form counts too, and answers with the 429 page.
    assert client.post(reverse("game-start"), {"difficulty": "mixed"}).status_code == 429
    # Another address with a fresh session may still start one; the same session from another address may not.
    other = Client(REMOTE_ADDR="10.9.8.7")
    assert post(other, reverse("game-api-start")).status_code == 201
    same_session = Client(REMOTE_ADDR="10.9.8.6")
    same_session.cookies = client.cookies
    assert post(same_session, reverse("game-api-start")).status_code == 429


def test_basemap_levels_are_cached_by_the_browser_and_revalidated_by_etag(client):
    from predictor import places

    version = places.basemap_version()
    world = client.get(reverse("basemap"), {"v": version, "detail": "world"}, HTTP_ACCEPT_ENCODING="gzip")
    assert world.status_code == 200 and world["Cache-Control"] == "public, max-age=31536000, immutable"
    assert world["Content-Encoding"] == "gzip" and world.has_header("ETag")
    fine = client.get(reverse("basemap"), {"v": version, "detail": "fine"})
    world_bytes, fine_bytes = places.basemap_level("world"), places.basemap_level("fine")
    assert len(world_bytes) < 300_000 < len(fine_bytes)  # the world view needs far fewer points
    assert {f["properties"]["name"] for f in json.loads(world_bytes)["features"]} == \
        {f["properties"]["name"] for f in json.loads(fine.content)["features"]}
    again = client.get(reverse("basemap"), {"v": version, "detail": "world"}, HTTP_IF_NONE_MATCH=world["ETag"],
                       HTTP_ACCEPT_ENCODING="gzip")
    assert again.status_code == 304 and again.content == b""
    unversioned = client.get(reverse("basemap"))
    assert unversioned["Cache-Control"] == "public, max-age=3600"
    assert client.get(reverse("basemap"), {"detail": "huge"}).status_code == 404
    page = client.get(reverse("home")).content.decode()
    assert f'data-basemap-url="/basemap/countries.geojson?v={version}"' in page

"""The game-image admin: what staff see of each image, the filters and search, in few queries."""
from __future__ import annotations

import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from games import services
from games.models import GameImage, LinkStatus, ModelGuess
from tests.game_factories import MODEL, PLACES, make_image, make_playable

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:games_gameimage_changelist")


def play_game(client_session: str, *, lat_offset: float) -> None:
    """One finished game whose guesses are `lat_offset` degrees north of each truth."""
    game = services.start_game(session_key=client_session, seed=1)
    for round_ in game.rounds.order_by("index"):
        services.start_next_round(game=game)
        services.submit_guess(game=game, round_index=round_.index, lat=round_.image.lat + lat_offset,
                              lon=round_.image.lon)


def listed_ids(response) -> list[int]:
    return [int(pk) for pk in re.findall(r'name="_selected_action" value="(\d+)"', response.content.decode())]


def test_changelist_shows_photo_licence_errors_and_player_stats(admin_client, settings):
    settings.GAME_ROUNDS = 5
    images = make_playable(5)
    play_game("s1", lat_offset=1.0)  # 111 km off: better than the model (222 km)
    play_game("s2", lat_offset=3.0)  # 333 km off: worse
    response = admin_client.get(CHANGELIST)
    html = response.content.decode()
    assert response.status_code == 200
    first = images[0]
    assert reverse("admin:games_gameimage_photo", args=[first.pk]) in html
    assert "author 0" in html
    assert 'href="https://creativecommons.org/licenses/by/2.0/"' in html
    assert "222 km" in html  # the reference model's error
    assert "222 km" in html and "class=\"s3-bars\"" not in html  # no scene probabilities on factory images
    row = re.search(rf'value="{first.pk}".*?</tr>', html, re.S).group(0)
    assert ">2<" in row  # rounds played
    assert "222 km" in row  # mean player error: (111 + 333) / 2
    assert "50%" in row  # one player of two beat the model
    assert f"Model errors are those of the reference model: <strong>{MODEL}</strong>" in html


def test_changelist_queries_do_not_grow_with_the_number_of_images(admin_client):
    make_playable(2)
    with CaptureQueriesContext(connection) as few:
        admin_client.get(CHANGELIST)
    for i, (lat, lon) in enumerate(PLACES[2:], start=2):
        make_image(index=i, lat=lat, lon=lon, model_lat=lat, model_lon=lon + 1)
    with CaptureQueriesContext(connection) as many:
        response = admin_client.get(CHANGELIST)
    assert len(listed_ids(response)) == len(PLACES)
    assert len(many.captured_queries) == len(few.captured_queries)


def test_detail_page_shows_map_scene_bars_and_each_models_error(admin_client):
    image = make_image(index=0, lat=48.8584, lon=2.2945, model_lat=50.8584, model_lon=2.2945)
    GameImage.objects.filter(pk=image.pk).update(p_indoor=0.1, p_natural=0.2, p_urban=0.7)
    ModelGuess.objects.create(image=image, model_name="base(M, m)", lat=48.0, lon=2.0, distance_km=97.0)
    html = admin_client.get(reverse("admin:games_gameimage_change", args=[image.pk])).content.decode()
    assert '<svg class="geoweb-map"' in html
    assert "https://www.openstreetmap.org/?mlat=48.85840&amp;mlon=2.29450" in html
    assert '<rect class="s3-urban" width="70" height="8"' in html
    assert "<td>base(M, m)</td><td>48.0000, 2.0000</td><td>97 km</td>" in html
    assert f"<td>{MODEL}</td><td>50.8584, 2.2945</td><td>222 km</td>" in html
    assert "never played" in html
    assert 'href="https://example.org/photo/0"' in html


def test_the_photo_is_served_to_staff_only(admin_client, client, jpeg_bytes):
    image = make_image(index=0, lat=1, lon=2)
    url = reverse("admin:games_gameimage_photo", args=[image.pk])
    response = admin_client.get(url)
    assert response.status_code == 200 and response["Content-Type"] == "image/jpeg"
    assert b"".join(response.streaming_content)[:2] == b"\xff\xd8"
    assert client.get(url).status_code == 302  # to the admin login


# --- filters and search ---------------------------------------------------------------------------------------------

def test_licence_filter_tells_open_reserved_and_unknown_apart(admin_client):
    open_ = make_image(index=0, lat=1, lon=1)
    reserved = make_image(index=1, lat=2, lon=2, licence="All Rights Reserved")
    unknown = make_image(index=2, lat=3, lon=3, licence="")
    assert listed_ids(admin_client.get(CHANGELIST, {"licence": "open"})) == [open_.pk]
    assert listed_ids(admin_client.get(CHANGELIST, {"licence": "arr"})) == [reserved.pk]
    assert listed_ids(admin_client.get(CHANGELIST, {"licence": "unknown"})) == [unknown.pk]


def test_scene_filter_uses_the_most_likely_concept(admin_client):
    indoor, natural, urban, none = (make_image(index=i, lat=i, lon=i) for i in range(4))
    GameImage.objects.filter(pk=indoor.pk).update(p_indoor=0.6, p_natural=0.3, p_urban=0.1)
    GameImage.objects.filter(pk=natural.pk).update(p_indoor=0.1, p_natural=0.5, p_urban=0.4)
    GameImage.objects.filter(pk=urban.pk).update(p_indoor=0.2, p_natural=0.2, p_urban=0.6)
    for value, image in [("indoor", indoor), ("natural", natural), ("urban", urban), ("none", none)]:
        assert listed_ids(admin_client.get(CHANGELIST, {"scene": value})) == [image.pk], value


def test_model_error_band_filter(admin_client):
    near = make_image(index=0, lat=10, lon=10, model_lat=10.001, model_lon=10)  # ~0.1 km
    country = make_image(index=1, lat=10, lon=20, model_lat=13, model_lon=20)  # ~333 km
    far = make_image(index=2, lat=10, lon=30, model_lat=-40, model_lon=30)  # ~5560 km
    unguessed = make_image(index=3, lat=10, lon=40)
    assert listed_ids(admin_client.get(CHANGELIST, {"model_error": "street"})) == [near.pk]
    assert listed_ids(admin_client.get(CHANGELIST, {"model_error": "country"})) == [country.pk]
    assert listed_ids(admin_client.get(CHANGELIST, {"model_error": "beyond"})) == [far.pk]
    assert listed_ids(admin_client.get(CHANGELIST, {"model_error": "none"})) == [unguessed.pk]
    assert listed_ids(admin_client.get(CHANGELIST, {"model_error": "city"})) == []


def test_active_link_status_and_never_played_filters(admin_client, settings):
    settings.GAME_ROUNDS = 5
    played = make_playable(5)
    spare = make_image(index=7, lat=5, lon=5, model_lat=6, model_lon=5)
    GameImage.objects.filter(pk=spare.pk).update(active=False, link_status=LinkStatus.DEAD)
    GameImage.objects.filter(pk=played[0].pk).update(link_status=LinkStatus.ALIVE)
    play_game("s1", lat_offset=1.0)
    assert listed_ids(admin_client.get(CHANGELIST, {"played": "never"})) == [spare.pk]
    assert sorted(listed_ids(admin_client.get(CHANGELIST, {"played": "played"}))) == sorted(i.pk for i in played)
    assert listed_ids(admin_client.get(CHANGELIST, {"active__exact": "0"})) == [spare.pk]
    assert listed_ids(admin_client.get(CHANGELIST, {"link_status__exact": "dead"})) == [spare.pk]
    assert listed_ids(admin_client.get(CHANGELIST, {"link_status__exact": "alive"})) == [played[0].pk]
    assert len(listed_ids(admin_client.get(CHANGELIST, {"link_status__exact": "unchecked"}))) == 4


def test_search_by_id_and_by_author(admin_client):
    images = [make_image(index=i, lat=i, lon=i) for i in range(12)]
    assert listed_ids(admin_client.get(CHANGELIST, {"q": f"#{images[3].pk}"})) == [images[3].pk]
    assert images[3].pk in listed_ids(admin_client.get(CHANGELIST, {"q": str(images[3].pk)}))
    assert listed_ids(admin_client.get(CHANGELIST, {"q": "author 11"})) == [images[11].pk]


def test_changelist_tells_which_licences_allow_play(admin_client):
    open_ = make_image(index=0, lat=1, lon=1)
    closed = make_image(index=1, lat=2, lon=2, licence="All Rights Reserved")
    excused = make_image(index=2, lat=3, lon=3, licence="All Rights Reserved")
    GameImage.objects.filter(pk=excused.pk).update(activation_reason="permission from the author")
    html = admin_client.get(CHANGELIST).content.decode()

    def allows(image):
        row = re.search(rf'value="{image.pk}".*?</tr>', html, re.S).group(0)
        cell = re.search(r'<td class="field-publishable">(.*?)</td>', row, re.S).group(1)
        return "icon-yes" in cell

    assert (allows(open_), allows(closed), allows(excused)) == (True, False, True)

"""The game-image explorer colours photos by people-minus-model error: the points carry people's median error and
its difference to each model's, and the map draws blue (people closer) and red (model closer) dots."""
import json
import re
import statistics

import pytest
from django.urls import reverse

from games.models import GameImage, ModelGuess, Round
from tests.game_factories import MODEL
from tests.results_factories import person_near, play_games, scened_images


def _points(client, who):
    client.force_login(who)
    page = client.get(reverse("game-image-explorer")).content.decode()
    match = re.search(r'<script id="game-image-points" type="application/json">(.*?)</script>', page, re.S)
    assert 'id="colour-by"' in page
    return {p["id"]: p for p in json.loads(match.group(1))}


@pytest.mark.django_db
def test_points_carry_people_median_error_and_its_difference_to_each_model(client, other_user):
    images = scened_images(6)
    play_games(3)
    other_user.is_staff = True
    other_user.save()
    points = _points(client, other_user)
    for image in images:
        point = points[image.pk]
        played = list(Round.objects.filter(image=image, guessed_at__isnull=False).values_list("distance_km",
                                                                                                flat=True))
        if not played:
            assert point["people_km"] is None and point["people_minus_model_km"] == {}
            continue
        model_km = ModelGuess.objects.get(image=image, model_name=MODEL).distance_km
        assert point["people_km"] == pytest.approx(statistics.median(played), abs=0.1)
        assert point["people_rounds"] == len(played)
        difference = point["people_minus_model_km"][MODEL]
        assert difference == pytest.approx(statistics.median(played) - model_km, abs=0.2)
        assert (difference < 0) == person_near(image)  # near guesses (~56 km) beat the model's ~222 km


@pytest.mark.browser
def test_the_map_colours_photos_by_people_minus_model(live_settings, transactional_db, page, django_user_model):
    scened_images(6)
    play_games(3)
    staff = django_user_model.objects.create_user(username="staff", password="a-long-test-password-9",
                                                  is_staff=True)
    page.set_default_timeout(45_000)  # the dev box is shared: allow for load
    # Logged in through a session made here (the login form is tested elsewhere).
    from django.test import Client

    session = Client()
    session.force_login(staff)
    page.context.add_cookies([{"name": "sessionid", "value": session.cookies["sessionid"].value,
                               "url": live_settings.url}])
    page.goto(live_settings.url + reverse("game-image-explorer"))
    page.select_option("#colour-by", MODEL)
    assert page.locator("#colour-legend").is_visible()
    page.wait_for_selector("path.image-dot")
    fills = page.eval_on_selector_all("path.image-dot", "els => els.map(e => e.getAttribute('fill'))")
    played = {image.pk for image in GameImage.objects.filter(rounds__guessed_at__isnull=False)}
    near = [i for i in GameImage.objects.filter(pk__in=played) if person_near(i)]
    far = [i for i in GameImage.objects.filter(pk__in=played) if not person_near(i)]
    # Markers may be clustered at world zoom: every colour shown must be one the legend explains, and both
    # outcomes appear once the map is zoomed in enough to uncluster (6 photos on 5 continents: none overlap).
    assert fills and set(fills) <= {"#7fa7d6", "#1f5fa8", "#0b2f5e", "#ef9a9a", "#c62828", "#6d0f0f", "#888888"}
    if near:
        assert {"#7fa7d6", "#1f5fa8"} & set(fills)
    if far:
        assert {"#c62828", "#ef9a9a"} & set(fills)
    assert not page.js_errors

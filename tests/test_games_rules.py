"""Play-mode rules, enforced by the server: no truth before the guess, one guess per round, rounds in order."""
import json

import pytest
from django.urls import reverse

from games import selectors
from games.models import Game, GameImage, Round
from tests.game_factories import MODEL, make_image, make_playable

pytestmark = pytest.mark.django_db


def post(client, url, data=None):
    return client.post(url, json.dumps(data or {}), content_type="application/json")


def start(client, **data):
    response = post(client, reverse("game-api-start"), data)
    assert response.status_code == 201, response.content
    return response.json()


def guess(client, key, index, lat, lon):
    return post(client, reverse("game-api-guess", args=[key]), {"round": index, "lat": lat, "lon": lon})


def contains_a_truth(payload: bytes, images) -> bool:
    text = payload.decode()
    return any(str(image.lat) in text or str(image.lat + 2.0) in text or image.source_id in text
               or image.source_url in text for image in images)


def test_start_is_refused_clearly_without_playable_images(client):
    make_image(index=0, lat=1, lon=1, model_lat=2, model_lon=2, licence="All Rights Reserved")
    response = post(client, reverse("game-api-start"))
    assert response.status_code == 503
    assert "1 have a licence that needs a staff reason" in response.json()["error"]
    page = client.get(reverse("home")).content.decode()
    # The image was just imported: the page says why it cannot be played, not to import it again.
    assert "1 have a licence that needs a staff reason" in page and "make_playable" in page
    assert "import_im2gps" not in page


def test_home_page_without_any_image_says_how_to_add_them(client):
    page = client.get(reverse("home")).content.decode()
    assert "import_game_images" in page and "import_im2gps --images" in page


def test_start_refuses_when_too_few_images_are_playable(client):
    make_playable(4)
    response = post(client, reverse("game-api-start"))
    assert response.status_code == 503
    assert "only 4" in response.json()["error"]


def test_only_open_licences_with_files_and_a_model_guess_are_chosen(client):
    images = make_playable(5)
    make_image(index=7, lat=5, lon=5, model_lat=6, model_lon=6, licence="All Rights Reserved")
    make_image(index=8, lat=5, lon=5, model_lat=6, model_lon=6, licence="")
    make_image(index=9, lat=5, lon=5)  # no model guess
    GameImage.objects.filter(source_id=images[0].source_id).update(active=False)
    assert post(client, reverse("game-api-start")).status_code == 503  # only 4 left
    make_image(index=6, lat=-5, lon=-5, model_lat=-6, model_lon=-6, licence="CC0 1.0")
    state = start(client)
    chosen = set(Round.objects.filter(game__key=state["key"]).values_list("image__source_id", flat=True))
    assert chosen == {i.source_id for i in images[1:]} | {"1006_abc6_1_6@N00.jpg"}


def test_no_response_reveals_the_truth_or_the_photo_id_before_the_guess(client):
    images = make_playable(6)
    state = start(client)
    assert not contains_a_truth(json.dumps(state).encode(), images)
    key = state["key"]
    for index in range(5):
        unguessed = list(GameImage.objects.filter(rounds__game__key=key, rounds__index__gte=index))
        unused = [i for i in images if not i.rounds.filter(game__key=key).exists()]
        for response in (client.get(reverse("game-api-state", args=[key])),
                         client.get(reverse("game-play", args=[key])),
                         client.get(reverse("game-api-summary", args=[key]))):
            assert response.status_code in (200, 409)
            assert not contains_a_truth(response.content, unguessed + unused)
        photo_url = client.get(reverse("game-api-state", args=[key])).json()["rounds"][-1]["photo_url"]
        assert not any(image.source_id in photo_url for image in images)
        revealed = guess(client, key, index, 0.0, 0.0)
        assert revealed.status_code == 200
        round_ = revealed.json()["round"]
        image = GameImage.objects.get(rounds__game__key=key, rounds__index=index)
        assert (round_["truth"]["lat"], round_["truth"]["lon"]) == (image.lat, image.lon)
        assert round_["model"] == {"lat": image.lat + 2.0, "lon": image.lon}
        assert not contains_a_truth(revealed.content, [i for i in unguessed if i != image] + unused)
        if index < 4:
            nxt = post(client, reverse("game-api-next", args=[key]))
            assert nxt.status_code == 200
            assert not contains_a_truth(nxt.content, [i for i in unguessed if i != image] + unused)


def test_a_round_takes_one_guess_and_rounds_cannot_be_skipped(client):
    make_playable(6)
    key = start(client)["key"]
    assert guess(client, key, 1, 10, 10).status_code == 409  # skipping ahead
    first = guess(client, key, 0, 10, 10)
    assert first.status_code == 200
    again = guess(client, key, 0, 48.0, 2.0)
    assert again.status_code == 409 and "already" in again.json()["error"]
    assert guess(client, key, 1, 10, 10).status_code == 409  # round 2 has not been shown yet
    round0 = Round.objects.get(game__key=key, index=0)
    assert (round0.guess_lat, round0.guess_lon) == (10, 10)
    post(client, reverse("game-api-next", args=[key]))
    post(client, reverse("game-api-next", args=[key]))  # a second "next" does not skip round 2
    assert guess(client, key, 2, 10, 10).status_code == 409
    assert guess(client, key, 1, 10, 10).status_code == 200


def test_bad_guesses_are_refused_and_lose_nothing(client):
    make_playable(6)
    key = start(client)["key"]
    for body in ({"round": 0, "lat": 91, "lon": 0}, {"round": 0, "lat": "x", "lon": 0}, {"round": 0}):
        response = post(client, reverse("game-api-guess", args=[key]), body)
        assert response.status_code == 400 and response.json()["error"]
    assert client.post(reverse("game-api-guess", args=[key]), "not json", content_type="application/json").status_code == 400
    assert guess(client, key, 0, 1, 1).status_code == 200


def test_scores_are_computed_on_the_server_for_player_and_model(client):
    images = make_playable(6)
    key = start(client)["key"]
    image = GameImage.objects.get(rounds__game__key=key, rounds__index=0)
    data = guess(client, key, 0, image.lat, image.lon).json()["round"]
    assert data["score"] == 5000 and data["distance_km"] == pytest.approx(0, abs=1e-6)
    assert data["model_distance_km"] == pytest.approx(222.4, abs=0.5)  # 2 degrees of latitude
    assert data["model_score"] == 4307
    assert len(images) == 6


def test_another_player_cannot_see_or_play_my_game(client, django_user_model):
    make_playable(6)
    key = start(client)["key"]
    photo = client.get(reverse("game-api-state", args=[key])).json()["rounds"][0]["photo_url"]
    assert client.get(photo).status_code == 200
    from django.test import Client

    stranger = Client()
    assert stranger.get(reverse("game-api-state", args=[key])).status_code == 404
    assert stranger.get(reverse("game-play", args=[key])).status_code == 404
    assert stranger.get(photo).status_code == 404
    assert post(stranger, reverse("game-api-guess", args=[key]), {"round": 0, "lat": 0, "lon": 0}).status_code == 404


def test_photos_of_rounds_not_yet_shown_are_not_served(client):
    make_playable(6)
    key = start(client)["key"]
    later = Round.objects.get(game__key=key, index=3)
    assert client.get(reverse("game-photo", args=[later.photo_token])).status_code == 404


def test_a_missing_photo_file_is_reported_not_a_crash(client):
    make_playable(6)
    key = start(client)["key"]
    round0 = Round.objects.select_related("image").get(game__key=key, index=0)
    round0.image.image.storage.delete(round0.image.image.name)
    response = client.get(reverse("game-photo", args=[round0.photo_token]))
    assert response.status_code == 404 and b"missing" in response.content
    assert guess(client, key, 0, 1, 1).status_code == 200  # the round can still be played


def test_images_whose_files_are_gone_are_not_chosen(client):
    images = make_playable(6)
    images[2].image.storage.delete(images[2].image.name)
    for _ in range(3):
        key = start(client)["key"]
        assert images[2].id not in Round.objects.filter(game__key=key).values_list("image_id", flat=True)


def play_through(client, key, guesses):
    for index, (lat, lon) in enumerate(guesses):
        if index:
            assert post(client, reverse("game-api-next", args=[key])).status_code == 200
        assert guess(client, key, index, lat, lon).status_code == 200


def test_full_game_summary(client):
    make_playable(6)
    key = start(client)["key"]
    rounds = list(Round.objects.select_related("image").filter(game__key=key).order_by("index"))
    # Exact on two rounds (beats the model), far off on three.
    guesses = [(r.image.lat, r.image.lon) if i < 2 else (-r.image.lat, (r.image.lon + 270) % 360 - 180) for i, r in enumerate(rounds)]
    play_through(client, key, guesses)
    summary = client.get(reverse("game-api-summary", args=[key])).json()
    assert summary["finished"] and summary["rounds_played"] == 5
    assert summary["better_than_model"] == 2
    assert summary["model_score"] == 5 * 4307
    assert summary["score"] == sum(r["score"] for r in summary["rounds"])
    assert summary["mean_error_km"] > summary["model_mean_error_km"]
    assert [r["index"] for r in summary["rounds"]] == [0, 1, 2, 3, 4]
    assert summary["challenge_url"].startswith("/play/challenge/")
    assert guess(client, key, 4, 0, 0).status_code == 409  # replaying a finished game is refused


def test_challenge_replays_the_same_images_in_the_same_order(client):
    make_playable(8)
    key = start(client)["key"]
    play_through(client, key, [(0, 0)] * 5)
    token = Game.objects.get(key=key).challenge_token
    page = client.get(reverse("game-challenge", args=[token]))
    original = Game.objects.get(key=key)
    assert page.status_code == 200
    assert str(sum(original.rounds.values_list("score", flat=True))).encode() in page.content
    from django.test import Client

    friend = Client()
    response = friend.post(reverse("game-start"), {"challenge": token})
    assert response.status_code == 302
    replay = Game.objects.exclude(key=key).get()
    assert replay.mode == Game.Mode.CHALLENGE and replay.challenge_of == original
    order = lambda game: list(game.rounds.order_by("index").values_list("image_id", flat=True))  # noqa: E731
    assert order(replay) == order(original)
    tokens = set(original.rounds.values_list("photo_token", flat=True))
    assert not tokens & set(replay.rounds.values_list("photo_token", flat=True))
    state = friend.get(reverse("game-api-state", args=[replay.key])).json()
    assert state["challenger"]["score"] == sum(original.rounds.values_list("score", flat=True))


def test_an_unfinished_game_is_not_a_challenge(client):
    make_playable(6)
    key = start(client)["key"]
    token = Game.objects.get(key=key).challenge_token
    assert client.get(reverse("game-challenge", args=[token])).status_code == 404
    assert post(client, reverse("game-api-start"), {"challenge": token}).status_code == 400


def test_logged_in_games_belong_to_the_user(client, user):
    make_playable(6)
    client.force_login(user)
    key = start(client)["key"]
    game = Game.objects.get(key=key)
    assert game.user == user and game.session_key == "" and game.player_name == "alice"


def test_opponent_defaults_to_the_model_with_most_guesses_and_follows_settings(settings):
    make_playable(6)
    make_image(index=20, lat=1, lon=1, model_lat=1, model_lon=2, model_name="base(M, f*)")
    assert selectors.opponent_models() == [MODEL]
    settings.GAME_OPPONENT_MODELS = ["base(M, f*)", "nonexistent"]
    assert selectors.opponent_models() == ["base(M, f*)"]


def test_nickname_is_validated(client):
    make_playable(6)
    key = start(client)["key"]
    url = reverse("game-api-nickname", args=[key])
    assert post(client, url, {"nickname": "  "}).status_code == 400
    assert post(client, url, {"nickname": "x" * 31}).status_code == 400
    assert post(client, url, {"nickname": "a\x00b"}).status_code == 400
    assert post(client, url, {"nickname": "  Mapper   Max "}).json()["player_name"] == "Mapper Max"


def test_admin_lists_and_withdraws_game_images(client, django_user_model):
    images = make_playable(6)
    admin_user = django_user_model.objects.create_superuser("root", "root@example.org", "a-long-admin-password-1")
    client.force_login(admin_user)
    listing = client.get(reverse("admin:games_gameimage_changelist"))
    assert listing.status_code == 200 and images[0].source_id.encode() in listing.content
    client.post(reverse("admin:games_gameimage_changelist"),
                {"action": "deactivate", "_selected_action": [i.pk for i in images[:2]]})
    assert GameImage.objects.filter(active=False).count() == 2
    assert post(client, reverse("game-api-start")).status_code == 503  # 4 playable left


def test_a_guess_costs_a_handful_of_queries(client, django_assert_max_num_queries):
    make_playable(6)
    key = start(client)["key"]
    # game, the game's rounds with their photos, its opponents, their stored guesses, the update and one insert of
    # every AI's answer (inside a savepoint in a test)
    with django_assert_max_num_queries(8):
        assert guess(client, key, 0, 1, 1).status_code == 200


def test_admin_edit_of_the_licence_updates_whether_it_is_open(client, django_user_model):
    image = make_image(index=0, lat=1, lon=1, model_lat=2, model_lon=2)
    admin_user = django_user_model.objects.create_superuser("root", "root@example.org", "a-long-admin-password-1")
    client.force_login(admin_user)
    url = reverse("admin:games_gameimage_change", args=[image.pk])
    form = {"lat": 1, "lon": 1, "source_id": image.source_id, "author": "x", "licence_name": "All Rights Reserved",
            "licence_url": "", "source_url": "", "active": "on",
            "model_guesses-TOTAL_FORMS": 0, "model_guesses-INITIAL_FORMS": 0}
    response = client.post(url, form)
    assert response.status_code == 302, response.content[:2000]
    image.refresh_from_db()
    assert image.licence_name == "All Rights Reserved" and not image.is_open_licence

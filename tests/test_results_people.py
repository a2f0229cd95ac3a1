"""/results/: people against models on the same photos, by scene and continent, score distributions, cached figures
and the anonymised CSV export."""
import csv
import io
import statistics

import pytest
from django.core.management import call_command

from games.models import ModelGuess, Round, RoundAnswer
from results import answers, services
from results.models import Snapshot
from tests.game_factories import MODEL
from tests.results_factories import play_games, scened_images

pytestmark = pytest.mark.django_db
SECOND = "base(M, f*)"


@pytest.fixture(autouse=True)
def _no_background_refresh(settings):
    settings.RESULTS_REFRESH_S = 0


def _model_km(round_, name=MODEL):
    return RoundAnswer.objects.get(round=round_, opponent__model_name=name).distance_km


def _expected(rounds):
    people = [r.distance_km for r in rounds]
    model = [_model_km(r) for r in rounds]
    return {"people_median": statistics.median(people), "model_median": statistics.median(model),
            "beat": sum(p < m for p, m in zip(people, model)) / len(rounds)}


def test_per_model_figures_compare_people_and_model_on_the_same_rounds(user):
    scened_images(6)
    rounds = play_games(4, user=user)
    snapshot = services.recompute_results()
    expected = _expected(rounds)
    [block] = snapshot.data["models"]
    assert block["name"] == MODEL
    assert block["overall"]["rounds"] == 20
    assert block["overall"]["people_median_km"] == pytest.approx(expected["people_median"], abs=0.1)
    assert block["overall"]["model_median_km"] == pytest.approx(expected["model_median"], abs=0.1)
    assert block["overall"]["people_beat_rate"] == pytest.approx(expected["beat"], abs=1e-4)
    # Both outcomes happen: people are near on even photos (beat the model) and far on odd ones.
    assert 0 < block["overall"]["people_beat_rate"] < 1
    assert snapshot.data["people"]["rounds"] == 20


def test_split_by_scene_and_continent():
    images = scened_images(6)
    rounds = play_games(3)
    data = services.recompute_results().data
    block = data["models"][0]
    by_image = {image.pk: image for image in images}
    urban = [r for r in rounds if r.image.p_urban == 0.8]
    assert block["by_scene"]["urban"]["rounds"] == len(urban)
    assert block["by_scene"]["urban"]["people_median_km"] == pytest.approx(
        statistics.median(r.distance_km for r in urban), abs=0.1)
    assert sum(row["rounds"] for row in block["by_scene"].values()) == len(rounds)
    # PLACES: Paris, New York, Sydney, Tokyo, Rio, Agra: continents of the truths.
    continents = {"Europe": 0, "North America": 1, "Oceania": 2, "South America": 4}
    for name, index in continents.items():
        count = sum(1 for r in rounds if by_image[r.image_id].source_id.startswith(f"{1000 + index}_"))
        if count:
            assert block["by_continent"][name]["rounds"] == count
    asia = sum(1 for r in rounds if by_image[r.image_id].source_id.split("_")[0] in ("1003", "1005"))
    assert block["by_continent"].get("Asia", {"rounds": 0})["rounds"] == asia


def test_two_opponents_each_get_their_own_block_and_all_models_pools_them(user):
    images = scened_images(6)
    for image in images:  # the second AI is 10° south of every truth
        ModelGuess.objects.create(image=image, model_name=SECOND, lat=image.lat - 10, lon=image.lon,
                                  distance_km=1111.9)
    from games import services as game_services

    game = game_services.start_game(user=user, opponents=[MODEL, SECOND], seed=7)
    for index in range(5):
        round_ = game_services.start_next_round(game=game)
        game_services.submit_guess(game=game, round_index=index, lat=round_.image.lat + 5.0, lon=round_.image.lon)
    data = services.recompute_results().data
    names = [b["name"] for b in data["models"]]
    assert sorted(names) == sorted([MODEL, SECOND])
    second = next(b for b in data["models"] if b["name"] == SECOND)
    first = next(b for b in data["models"] if b["name"] == MODEL)
    assert second["overall"]["people_beat_rate"] == 1.0  # ~556 km against ~1,112 km
    assert first["overall"]["people_beat_rate"] == 0.0  # ~556 km against ~222 km
    assert data["overall"]["overall"]["rounds"] == 10
    assert data["overall"]["overall"]["people_beat_rate"] == 0.5


def test_score_distributions_count_every_round():
    scened_images(6)
    rounds = play_games(2)
    block = services.recompute_results().data["models"][0]
    assert sum(block["scores"]["people"]) == len(rounds) == sum(block["scores"]["model"])
    # The model is always ~222 km off: score ~4,320, in the 4,000-4,500 bin.
    assert block["scores"]["model"][8] == len(rounds)


def test_the_page_serves_cached_figures_with_a_constant_number_of_queries(client, django_assert_max_num_queries):
    scened_images(6)
    play_games(2)
    html = client.get("/results/").content.decode()
    assert "have not been computed yet" in html
    call_command("recompute_results", "--only", "results")
    play_games(2)  # played after the recompute: not in the figures until the next one
    with django_assert_max_num_queries(4):
        html = client.get("/results/").content.decode()
    assert "10 rounds on" in html
    assert f'data-model="{MODEL}"' in html
    for chart in ("median-by-model", "model-1-scene", "model-1-continent", "model-1-scores", "all-scores"):
        assert f"/results/chart/{chart}.svg" in html
        response = client.get(f"/results/chart/{chart}.svg")
        assert response.status_code == 200 and b"<svg" in response.content
    assert "people" in client.get("/results/chart/model-1-scores.svg").content.decode()


def test_the_csv_export_is_anonymised_and_rounded(client, user):
    scened_images(6)
    rounds = play_games(2, user=user)
    services.recompute_results()
    html = client.get("/results/").content.decode()
    assert 'href="/results/rounds.csv"' in html and "CC BY 4.0" in html
    response = client.get("/results/rounds.csv")
    assert response["Content-Type"].startswith("text/csv")
    text = response.content.decode()
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == len(rounds)
    assert list(rows[0])[:8] == ["photo_id", "true_lat", "true_lon", "scene", "people_lat", "people_lon", "people_km",
                                 "people_score"]
    assert {row["model1_name"] for row in rows} == {MODEL}
    guesses = {(round(r.guess_lat, 1), round(r.guess_lon, 1)) for r in rounds}
    for row in rows:
        assert len(row["people_lat"].split(".")[1]) == 1 and len(row["people_lon"].split(".")[1]) == 1
        assert (float(row["people_lat"]), float(row["people_lon"])) in guesses
    for secret in (user.username, str(Round.objects.first().game.key), "session-0",
                   f"{rounds[0].guess_lon:.4f}", f"{rounds[0].guess_lat:.4f}"):
        assert secret not in text
    assert not [column for column in rows[0] if any(w in column for w in ("user", "game", "time", "session"))]
    assert [row["photo_id"] for row in rows] == sorted(row["photo_id"] for row in rows)
    # Players are told before they start that their guesses end up there, and how.
    home = client.get("/").content.decode()
    assert 'id="start-game"' in home
    notice = home[home.index('id="guesses-published"'):]
    assert 'href="/results/"' in notice and "rounded to 0.1°" in notice and "never your name" in notice


def test_model_answers_is_the_one_reader_of_ai_answers():
    scened_images(6)
    rounds = play_games(1)
    read = list(answers.played_rounds(chunk_size=2))
    assert [r.round_id for r in read] == sorted(r.pk for r in rounds)
    for played, stored in zip(read, sorted(rounds, key=lambda r: r.pk)):
        assert [a.model for a in played.answers] == [MODEL]
        assert played.answers[0].distance_km == pytest.approx(_model_km(stored))


def test_an_empty_site_says_so(client):
    services.recompute_results()
    assert Snapshot.objects.get(key="results").data["rounds"] == 0
    assert "No round has been played yet" in client.get("/results/").content.decode()


def test_stale_figures_start_one_background_recompute_and_are_served_meanwhile(client, settings, monkeypatch):
    import datetime as dt

    from django.utils import timezone

    from results import selectors

    services.recompute_results()
    started = []
    monkeypatch.setattr(services, "refresh_results_in_background", lambda: started.append(1) or True)
    settings.RESULTS_REFRESH_S = 600
    assert client.get("/results/").status_code == 200
    assert started == []  # fresh figures: nothing to do
    selectors.results_page(now=timezone.now() + dt.timedelta(seconds=601))
    assert started == [1]
    settings.RESULTS_REFRESH_S = 0
    selectors.results_page(now=timezone.now() + dt.timedelta(days=30))
    assert started == [1]


@pytest.mark.django_db(transaction=True)
def test_the_background_recompute_stores_new_figures():
    scened_images(6)
    play_games(1)
    assert services.refresh_results_in_background()
    for _ in range(600):
        if not services._refreshing.locked():
            break
        import time

        time.sleep(0.1)
    assert Snapshot.objects.get(key="results").data["rounds"] == 5

"""Leaderboards: finished games by total score, all time and today, with the model's total on the same photos."""
import datetime as dt

import pytest
from django.urls import reverse
from django.utils import timezone

from games import selectors, services
from games.models import Game
from tests.game_factories import make_playable

pytestmark = pytest.mark.django_db


def finished_game(*, session: str, offset_deg: float, nickname: str = "", when: dt.datetime | None = None) -> Game:
    game = services.start_game(session_key=session, seed=7)
    for index, round_ in enumerate(game.rounds.select_related("image").order_by("index")):
        if index:
            services.start_next_round(game=game)
        services.submit_guess(game=game, round_index=index, lat=round_.image.lat + offset_deg, lon=round_.image.lon)
    if nickname:
        services.set_nickname(game=game, nickname=nickname)
    if when is not None:
        Game.objects.filter(pk=game.pk).update(finished_at=when)
    return game


def test_leaderboard_orders_by_total_and_shows_the_model_beside():
    make_playable(6)
    far = finished_game(session="a" * 32, offset_deg=5.0, nickname="Far")
    near = finished_game(session="b" * 32, offset_deg=0.0, nickname="Near")
    services.start_game(session_key="c" * 32)  # unfinished: not on the board
    rows = selectors.leaderboard(period="all")
    assert [r["name"] for r in rows] == ["Near", "Far"]
    assert rows[0]["score"] == 25000 and rows[0]["better_than_model"] == 5
    assert rows[1]["better_than_model"] == 0
    assert rows[0]["model_score"] == rows[1]["model_score"] == 5 * 4307  # same seed, same photos
    assert rows[1]["score"] == sum(far.rounds.values_list("score", flat=True))
    assert near.player_name == "Near"


def test_today_only_counts_games_finished_since_midnight_utc(client):
    make_playable(6)
    now = timezone.now()
    finished_game(session="a" * 32, offset_deg=0.0, nickname="Yesterday", when=now - dt.timedelta(days=1, hours=1))
    finished_game(session="b" * 32, offset_deg=3.0, nickname="Today")
    assert [r["name"] for r in selectors.leaderboard(period="today")] == ["Today"]
    assert [r["name"] for r in selectors.leaderboard(period="all")] == ["Yesterday", "Today"]
    page = client.get(reverse("leaderboard") + "?period=today")
    assert b"Today" in page.content and b"Yesterday" not in page.content
    assert b"Yesterday" in client.get(reverse("leaderboard")).content


def test_anonymous_players_without_a_nickname_are_anonymous_and_users_keep_their_name(user):
    make_playable(6)
    finished_game(session="a" * 32, offset_deg=1.0)
    game = services.start_game(user=user)
    for index, round_ in enumerate(game.rounds.select_related("image").order_by("index")):
        if index:
            services.start_next_round(game=game)
        services.submit_guess(game=game, round_index=index, lat=round_.image.lat, lon=round_.image.lon)
    assert [r["name"] for r in selectors.leaderboard()] == ["alice", "Anonymous"]


def test_leaderboard_query_count_does_not_grow_with_games(django_assert_max_num_queries):
    make_playable(6)
    for i in range(6):
        finished_game(session=f"{i}" * 32, offset_deg=float(i))
    # The games with their totals, then every listed game's opponents with their totals: two, however many games.
    with django_assert_max_num_queries(2):
        rows = selectors.leaderboard()
    assert len(rows) == 6

"""Games stored with numbered opponent columns (games migration 0004) show the same after every later migration.

The scenario (tests/golden_games.py) has games against one and two AIs, finished, half played and unplayed, and
challenges of both. It is written with the historical models of 0004, the database is migrated to the latest
state, and what the app shows of those games (state, summary, leaderboard, curation counts) must equal what the
code of 0004's schema showed (tests/golden/games_before_opponent_rows.json, recorded by that code).
"""
import json
import os

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from tests import golden_games

pytestmark = pytest.mark.django_db(transaction=True)

OLD = [("games", "0004_play_out_of_the_box")]


def _migrate(targets):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor


def _latest():
    return MigrationExecutor(connection).loader.graph.leaf_nodes()


def test_games_of_the_numbered_columns_schema_show_the_same_after_migrating():
    try:
        executor = _migrate(OLD)
        golden_games.build_old_schema(executor.loader.project_state(OLD).apps)
        _migrate(_latest())
        live = golden_games.outputs()
    finally:
        _migrate(_latest())
    # Recording the file is a one-off by the code of 0004's schema; it is never overwritten.
    if os.environ.get("GEOWEB_WRITE_GOLDEN") == "1" and not golden_games.GOLDEN.exists():
        golden_games.GOLDEN.parent.mkdir(exist_ok=True)
        golden_games.GOLDEN.write_text(json.dumps(live, indent=1, sort_keys=True) + "\n")
    expected = json.loads(golden_games.GOLDEN.read_text())
    # Spot checks that the scenario is what it claims (so the comparison below is not of two empty answers).
    games = expected["games"]
    assert games["two-ais-finished"]["opponents"] == [golden_games.ISN, golden_games.CLIP]
    assert len(games["two-ais-finished"]["summary"]["ai_scores"]) == 2
    assert len(games["two-ais-half-played"]["state"]["rounds"]) == 3
    assert games["challenge-of-two"]["state"]["challenger"]["name"] == "Duo"
    assert [row["name"] for row in expected["leaderboard"]] == ["Solo", "golden-user", "Duo"]
    for name in games:
        assert live["games"][name] == games[name], name
    assert live["leaderboard"] == expected["leaderboard"]
    assert live["curation"] == expected["curation"]


def _old_rows(apps) -> tuple[list, list]:
    games = list(apps.get_model("games", "Game").objects.order_by("key").values())
    rounds = list(apps.get_model("games", "Round").objects.order_by("game__key", "index").values())
    for row in games + rounds:
        row.pop("id"), row.pop("game_id", None), row.pop("challenge_of_id", None)
    return games, rounds


def test_the_migration_reverses_without_loss_and_refuses_when_a_game_has_three_ais():
    try:
        executor = _migrate(OLD)
        golden_games.build_old_schema(executor.loader.project_state(OLD).apps)
        before = _old_rows(executor.loader.project_state(OLD).apps)
        _migrate(_latest())
        executor = _migrate(OLD)
        assert _old_rows(executor.loader.project_state(OLD).apps) == before
        # A game against three AIs cannot go back into two numbered columns: unapplying refuses, losing nothing.
        _migrate(_latest())
        from games.models import Game, GameOpponent

        game = Game.objects.get(key=golden_games.game_key("two-ais-finished"))
        GameOpponent.objects.create(game=game, position=2, model_name="third")
        with pytest.raises(RuntimeError, match="more than 2 AI opponents"):
            _migrate(OLD)
        assert GameOpponent.objects.filter(game=game).count() == 3
    finally:
        _migrate(_latest())

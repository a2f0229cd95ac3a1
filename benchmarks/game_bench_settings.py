"""Settings for bench_game_api.py: the embedded defaults plus one hello-world route for a baseline.

GEOWEB_BENCH_SQLITE_TUNED=1 adds WAL journaling, synchronous=NORMAL and IMMEDIATE transactions to SQLite, to
measure what those (not yet default) options would change.
"""
import os

from geoweb.settings import *  # noqa: F401,F403
from geoweb.settings import DATABASES

ROOT_URLCONF = "benchmarks.game_bench_urls"

if os.environ.get("GEOWEB_BENCH_SQLITE_TUNED") == "1" and DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    DATABASES["default"]["OPTIONS"] = dict(
        DATABASES["default"].get("OPTIONS", {}),
        init_command="PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;", transaction_mode="IMMEDIATE")

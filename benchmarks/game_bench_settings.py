"""Settings for bench_game_api.py: the embedded defaults plus one hello-world route for a baseline.

GEOWEB_BENCH_SQLITE_PLAIN=1 runs SQLite as it comes (rollback journal, synchronous=FULL, deferred transactions)
instead of the project's WAL / synchronous=NORMAL / IMMEDIATE defaults, to measure what those change.
"""
import os

from geoweb.settings import *  # noqa: F401,F403
from geoweb.settings import DATABASES, RATE_LIMITS

ROOT_URLCONF = "benchmarks.game_bench_urls"

if os.environ.get("GEOWEB_BENCH_SQLITE_PLAIN") == "1" and DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    DATABASES["default"]["OPTIONS"] = {"timeout": DATABASES["default"]["OPTIONS"].get("timeout", 20)}

# Every benchmark client starts its game from 127.0.0.1: the per-IP limit on new games would stop them.
RATE_LIMITS = {**RATE_LIMITS, "game_start": (0, 60)}

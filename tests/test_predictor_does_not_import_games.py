"""Layers (issue 15 §4): games builds on predictor (models, places, the worker), never the other way round. No module
under predictor/ imports games, neither by an import statement (at the top or inside a function) nor by name
(`importlib.import_module("games…")`, `apps.get_model("games", …)`)."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _is_games(name: str | None) -> bool:
    return bool(name) and (name == "games" or name.startswith("games."))


def games_imports(source: str, filename: str = "<source>") -> list[str]:
    """`line: what` for every way `source` reaches the games app."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            found += [f"{node.lineno}: import {a.name}" for a in node.names if _is_games(a.name)]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and _is_games(node.module):
            found.append(f"{node.lineno}: from {node.module} import …")
        elif isinstance(node, ast.Call) and node.args:
            first = node.args[0]
            callee = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if (callee in ("import_module", "__import__", "get_model", "get_app_config")
                    and isinstance(first, ast.Constant) and isinstance(first.value, str)
                    and (_is_games(first.value) or first.value.startswith("games."))):
                found.append(f"{node.lineno}: {callee}({first.value!r})")
    return found


def test_the_scan_finds_every_kind_of_import_it_guards_against():
    source = ("import games\nimport os, games.models as gm\nfrom games.selectors import leaderboard\n"
              "def f():\n    from games import models\n    importlib.import_module('games.services')\n"
              "    apps.get_model('games', 'Game')\n"
              "from gamesx import y\nimport predictor.games_like\nx = 'games'\n")
    assert [line.split(":")[0] for line in games_imports(source)] == ["1", "2", "3", "5", "6", "7"]


def test_no_module_under_predictor_imports_games():
    files = sorted((ROOT / "predictor").rglob("*.py"))
    assert ROOT / "predictor" / "explorer.py" in files and len(files) > 20
    offenders = {str(path.relative_to(ROOT)): hits for path in files
                 if (hits := games_imports(path.read_text(encoding="utf-8"), str(path)))}
    assert offenders == {}, f"predictor must not import games (move the code into games): {offenders}"

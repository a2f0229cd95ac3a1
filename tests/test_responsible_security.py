"""Security headers of the upload path: the Content Security Policy (django-csp) allows this site and the tile
host only; `check --deploy` with production values is covered in test_security_settings.py."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.django_db
def test_pages_send_a_strict_content_security_policy(client):
    header = client.get("/terms/")["Content-Security-Policy"]
    directives = dict(part.strip().split(" ", 1) for part in header.split(";"))
    assert directives["default-src"] == "'self'" and directives["script-src"] == "'self'"
    assert directives["style-src"] == "'self'" and directives["object-src"] == "'none'"
    assert directives["frame-ancestors"] == "'none'" and directives["connect-src"] == "'self'"
    assert "unsafe-inline" not in header and "unsafe-eval" not in header


def test_the_tile_host_is_allowed_for_images(tmp_path):
    code = ("import django; django.setup(); from django.test import Client; "
            "print(Client(HTTP_HOST='localhost').get('/terms/')['Content-Security-Policy'])")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GEOWEB_") and k != "DJANGO_ALLOW_ASYNC_UNSAFE"}
    env.update({"GEOWEB_TILE_URL": "https://{s}.tiles.example.org/{z}/{x}/{y}.png", "GEOWEB_DATA_DIR": str(tmp_path),
                "DJANGO_SETTINGS_MODULE": "geoweb.settings", "GEOWEB_LOG_LEVEL": "ERROR"})
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=120)
    img = next(p for p in result.stdout.split(";") if p.strip().startswith("img-src"))
    assert img.split() == ["img-src", "'self'", "data:", "https://*.tiles.example.org"], result.stderr


def test_admin_moves_with_the_setting(tmp_path):
    code = ("import django; django.setup(); from django.test import Client; c = Client(HTTP_HOST='localhost'); "
            "print(c.get('/admin/').status_code, c.get('/desk-8c1/').status_code)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GEOWEB_") and k != "DJANGO_ALLOW_ASYNC_UNSAFE"}
    env.update({"GEOWEB_ADMIN_PATH": "desk-8c1", "GEOWEB_DATA_DIR": str(tmp_path),
                "DJANGO_SETTINGS_MODULE": "geoweb.settings", "GEOWEB_LOG_LEVEL": "ERROR"})
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.stdout.split() == ["404", "302"], result.stderr

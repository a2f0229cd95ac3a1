"""Production settings: `manage.py check --deploy` passes, and the security headers are sent."""
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_manage(*args, env_extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("GEOWEB_") and k != "DJANGO_ALLOW_ASYNC_UNSAFE"}
    env.update(env_extra)
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)


def test_check_deploy_passes_with_production_values(tmp_path):
    result = run_manage("check", "--deploy", "--fail-level", "WARNING", env_extra={
        "GEOWEB_PRODUCTION": "1",
        "GEOWEB_SECRET_KEY": secrets.token_urlsafe(60),
        "GEOWEB_ALLOWED_HOSTS": "geoweb.example.org",
        "GEOWEB_DATA_DIR": str(tmp_path),
    })
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_check_deploy_fails_on_embedded_defaults(tmp_path):
    # The embedded defaults are for one machine; production must be asked for explicitly.
    result = run_manage("check", "--deploy", "--fail-level", "WARNING", env_extra={"GEOWEB_DATA_DIR": str(tmp_path)})
    assert result.returncode != 0
    assert "SECURE_HSTS_SECONDS" in result.stdout + result.stderr


@pytest.mark.django_db
def test_pages_forbid_framing_and_sniffing(client):
    response = client.get("/accounts/login/")
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"


def test_admin_path_is_configurable(tmp_path):
    code = "from django.urls import reverse; print(reverse('admin:index'))"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GEOWEB_") and k != "DJANGO_ALLOW_ASYNC_UNSAFE"}
    env.update({"GEOWEB_ADMIN_PATH": "staff-only-7f3a", "GEOWEB_DATA_DIR": str(tmp_path),
                "DJANGO_SETTINGS_MODULE": "geoweb.settings"})
    result = subprocess.run([sys.executable, "-c", f"import django; django.setup(); {code}"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "/staff-only-7f3a/", result.stderr

"""HEALTH_ENV unset means production: a deployment that forgets it fails closed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from core.tests.test_settings import PRODUCTION_ENV

PROJECT = Path(__file__).resolve().parents[2]
PROBE = (
    "import django, os; os.environ['DJANGO_SETTINGS_MODULE'] = 'health_project.settings'\n"
    "django.setup()\n"
    "from django.conf import settings\n"
    "print(settings.HEALTH_ENV, settings.DEBUG, settings.SESSION_COOKIE_SECURE)\n"
)


def _without_health_env(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "HEALTH_ENV"}
    return {**env, "HEALTH_EMBEDDED_SERVICES": "false", **overrides}


def _python(env: dict[str, str], code: str = PROBE) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=PROJECT, env=env, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip


def test_unset_health_env_refuses_development_secrets_and_says_why() -> None:
    env = _without_health_env()
    for name in PRODUCTION_ENV:
        env.pop(name, None)
    result = _python(env)
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert "DJANGO_SECRET_KEY" in result.stderr
    assert "HEALTH_ENV is unset, which means production" in result.stderr
    assert "export HEALTH_ENV=development" in result.stderr


def test_unset_health_env_with_production_values_runs_as_production_without_debug() -> None:
    env = _without_health_env(**{k: v for k, v in PRODUCTION_ENV.items() if k != "HEALTH_ENV"})
    result = _python(env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["production", "False", "True"]


def test_development_is_an_explicit_choice() -> None:
    env = {k: v for k, v in _without_health_env().items() if k not in PRODUCTION_ENV}
    env["HEALTH_ENV"] = "development"
    result = _python(env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["development", "True", "False"]

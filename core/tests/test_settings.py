"""Settings come from the environment; a bad value stops start-up naming the variable."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[2]
PRODUCTION_ENV = {
    "HEALTH_ENV": "production",
    "DJANGO_SECRET_KEY": "x" * 20 + "-production-secret-for-the-deploy-check-0123456789",
    "DJANGO_ALLOWED_HOSTS": "health.example.com",
    "OURA_API_BASE_URL": "https://api.ouraring.com",
    "OURA_AUTHORIZE_URL": "https://cloud.ouraring.com/oauth/authorize",
    "OURA_TOKEN_URL": "https://api.ouraring.com/oauth/token",
    "OURA_REVOKE_URL": "https://api.ouraring.com/oauth/revoke",
    "OURA_CLIENT_ID": "prod-client",
    "OURA_CLIENT_SECRET": "prod-client-secret",
    "OURA_WEBHOOK_VERIFICATION_TOKEN": "prod-verification-token",
    "PUBLIC_BASE_URL": "https://health.example.com",
    "TOKEN_ENCRYPTION_KEYS": "q1JtQ3bYH6rV0mW0f1qk9N8m2o7bY3Qz5m9x1bYy0aE=",
    "PERSON_HASH_KEY": "production-person-hash-key-for-the-deploy-check",
    "ADMIN_URL_PREFIX": "staff-deploy-check/",
}


def run_django(env_overrides: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **env_overrides}
    return subprocess.run(
        [sys.executable, "manage.py", *(args or ("check",))],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DATABASE_URL", "mysql://somewhere/db"),
        ("NATS_URL", "not a url"),
        ("NATS_URL", "nats://n1:4222,ftp://n2"),
        ("S3_ENDPOINT_URL", "ftp://bucket"),
        ("WEBHOOK_MAX_BODY_BYTES", "a lot"),
        ("WEBHOOK_TIMESTAMP_TOLERANCE_S", "-5"),
        ("DJANGO_DEBUG", "maybe"),
        ("TOKEN_ENCRYPTION_KEYS", "not-a-fernet-key"),
        ("HEALTH_ENV", "staging"),
    ],
)
def test_malformed_value_stops_startup_naming_the_variable(variable: str, value: str) -> None:
    result = run_django({variable: value})
    assert result.returncode != 0
    assert variable in result.stderr
    assert "ImproperlyConfigured" in result.stderr


def test_production_refuses_development_secrets() -> None:
    result = run_django({**PRODUCTION_ENV, "DJANGO_SECRET_KEY": ""})
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY" in result.stderr
    dev_key = "ZGV2LW9ubHktdG9rZW4ta2V5LWRvLW5vdC11c2UtISE="
    result = run_django({**PRODUCTION_ENV, "TOKEN_ENCRYPTION_KEYS": dev_key})
    assert result.returncode != 0
    assert "TOKEN_ENCRYPTION_KEYS" in result.stderr


def test_production_requires_connection_urls() -> None:
    env = {**PRODUCTION_ENV, "DATABASE_URL": "", "NATS_URL": os.environ["NATS_URL"]}
    result = run_django(env)
    assert result.returncode != 0
    assert "DATABASE_URL" in result.stderr


def test_check_deploy_reports_no_warnings_in_production_mode() -> None:
    env = {
        **PRODUCTION_ENV,
        "DATABASE_URL": os.environ["DATABASE_URL"],
        "NATS_URL": os.environ["NATS_URL"],
        "S3_ENDPOINT_URL": os.environ["S3_ENDPOINT_URL"],
    }
    result = run_django(env, "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stderr
    assert "System check identified no issues" in result.stdout


def _no_connection_env(tmp_path: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "NATS_URL", "S3_ENDPOINT_URL", "HEALTH_EMBEDDED_SERVICES"}
    }
    # Any embedded service started by mistake would land here, not in the developer's set.
    return {**env, "HEALTH_ENV": "development", "DEVSTACK_ROOT": str(tmp_path / "stack")}


def test_importing_settings_starts_no_service(tmp_path: Path) -> None:
    """`shell`, `makemigrations` and mypy import settings: that must never start a server."""
    env = _no_connection_env(tmp_path)
    code = (
        "import django, os; os.environ['DJANGO_SETTINGS_MODULE'] = 'health_project.settings'\n"
        "try:\n    django.setup()\nexcept Exception as exc:\n    print(type(exc).__name__, exc)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=PROJECT, env=env, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert "ImproperlyConfigured DATABASE_URL must be set" in result.stdout
    assert not (tmp_path / "stack").exists()


def test_manage_py_without_services_names_the_variable_and_starts_nothing(
    tmp_path: Path,
) -> None:
    result = subprocess.run(
        [sys.executable, str(PROJECT / "manage.py"), "check"],
        cwd=tmp_path,  # from any folder
        env=_no_connection_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "DATABASE_URL must be set" in result.stderr
    assert "python -m devstack up" in result.stderr
    assert not (tmp_path / "stack").exists()


@pytest.mark.services
def test_manage_py_finds_embedded_services_that_are_already_running(tmp_path: Path) -> None:
    from devstack.pytest_plugin import embedded_stack

    stack = embedded_stack()
    if stack is None:
        pytest.skip("the session's services are external: there is no embedded set to find")
    env = {**_no_connection_env(tmp_path), "DEVSTACK_ROOT": str(stack.root)}
    result = subprocess.run(
        [sys.executable, str(PROJECT / "manage.py"), "shell", "-c",
         "from django.conf import settings; print(settings.DATABASE_URL, settings.NATS_URL)"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert os.environ["DATABASE_URL"].rsplit("/", 1)[0] in result.stdout
    assert os.environ["NATS_URL"] in result.stdout


def test_a_django_log_record_is_printed_once_even_in_debug(tmp_path: Path) -> None:
    """Django's own loggers (django.request: every 4xx/5xx) go through our one handler only."""
    env = {
        **os.environ,
        "DJANGO_DEBUG": "true",
        "LOG_FORMAT": "json",
        "DEVSTACK_ROOT": str(tmp_path),
    }
    result = subprocess.run(
        [sys.executable, str(PROJECT / "manage.py"), "shell", "-c",
         "import logging; logging.getLogger('django.request').warning('Bad Request: /probe')"],
        cwd=PROJECT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = [ln for ln in (result.stdout + result.stderr).splitlines() if "/probe" in ln]
    assert len(lines) == 1, lines
    assert lines[0].startswith("{")

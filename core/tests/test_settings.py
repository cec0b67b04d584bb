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

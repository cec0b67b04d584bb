"""pytest plugin: a throw-away set of real services for one test session.

Loaded with `-p devstack.pytest_plugin` (see pyproject.toml) so that it runs before
pytest-django reads settings. Services whose URL variable is already set are used as they
are; the rest start under `.devstack-test-<pid>/` and are removed when the session ends.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Generator
from pathlib import Path

import pytest

from devstack.stack import PROJECT_DIR, Stack

_stack: Stack | None = None
_started: list[str] = []
# What a pytest-xdist controller puts where a URL is unset: nothing listens there, and each
# worker, seeing the flag, starts its own service instead.
_PLACEHOLDER_FLAG = "DEVSTACK_TEST_PLACEHOLDERS"
_PLACEHOLDERS = {
    "postgres": "postgresql://placeholder@127.0.0.1:1/placeholder",
    "nats": "nats://127.0.0.1:1",
    "s3": "http://127.0.0.1:1",
}


def _distributing(config: pytest.Config) -> bool:
    """This process is a pytest-xdist controller handing tests to workers."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return False
    workers = getattr(config.known_args_namespace, "numprocesses", None)
    return workers not in (None, 0, "0")


@pytest.hookimpl(hookwrapper=True)
def pytest_load_initial_conftests(
    early_config: pytest.Config, parser: pytest.Parser, args: list[str]
) -> Generator[None, None, None]:
    global _stack
    os.environ.setdefault("HEALTH_ENV", "test")
    # Tests must never touch the developer's own .devstack; embedded-by-default is
    # replaced by the throw-away set below.
    os.environ["HEALTH_EMBEDDED_SERVICES"] = "false"
    stack = Stack(PROJECT_DIR / f".devstack-test-{os.getpid()}")
    if _distributing(early_config):
        # pytest-xdist's controller runs no test: its workers each start a set of their own
        # (tests stop services, purge streams and flush tables; sharing would mix them). The
        # controller only loads settings, which need URLs, not servers.
        for name, service in stack.services.items():
            if not os.environ.get(service.env_var):
                os.environ[service.env_var] = _PLACEHOLDERS[name]
                os.environ[_PLACEHOLDER_FLAG] = "1"
        yield
        return
    if os.environ.get("PYTEST_XDIST_WORKER") and os.environ.get(_PLACEHOLDER_FLAG):
        for name, service in stack.services.items():
            if os.environ.get(service.env_var) == _PLACEHOLDERS[name]:
                del os.environ[service.env_var]
    missing = [n for n, s in stack.services.items() if not os.environ.get(s.env_var)]
    if missing:
        stack.up(missing)
        _started.extend(missing)
        for name in missing:
            service = stack.services[name]
            os.environ[service.env_var] = service.url()
    _stack = stack
    yield


def pytest_unconfigure(config: pytest.Config) -> None:
    if _stack is not None and _started:
        _stack.down(_started)
        shutil.rmtree(_stack.root, ignore_errors=True)


def embedded_stack() -> Stack | None:
    """The session's stack, or None when every service is external."""
    return _stack if _started else None


def services_root() -> Path | None:
    return _stack.root if _stack is not None else None

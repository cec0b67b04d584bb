"""The set of embedded services under one project-local folder."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from devstack.services import SERVICE_CLASSES, EmbeddedService, ServiceError

PROJECT_DIR = Path(__file__).resolve().parent.parent
# DEVSTACK_ROOT moves the whole set (and `make run`'s own state) elsewhere, e.g. for a test
# that runs `make run` beside the developer's own stack.
DEFAULT_ROOT = Path(os.environ.get("DEVSTACK_ROOT") or PROJECT_DIR / ".devstack").resolve()


class Stack:
    def __init__(self, root: Path = DEFAULT_ROOT) -> None:
        self.root = root
        self.services: dict[str, EmbeddedService] = {cls.name: cls(root) for cls in SERVICE_CLASSES}

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialise start and stop across processes, so two starts never share a data dir."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def up(self, names: list[str] | None = None) -> dict[str, str]:
        with self._locked():
            for name in names or list(self.services):
                self.services[name].start()
        return self.env()

    def down(self, names: list[str] | None = None) -> None:
        with self._locked():
            for name in names or list(self.services):
                self.services[name].stop()

    def start(self, name: str) -> None:
        self.up([name])

    def stop(self, name: str) -> None:
        self.down([name])

    def status(self) -> dict[str, bool]:
        return {name: service.is_running() for name, service in self.services.items()}

    def env(self) -> dict[str, str]:
        """Connection variables of the services started here, whether or not they answer now."""
        return {
            service.env_var: service.url()
            for service in self.services.values()
            if service.read_state() is not None
        }


def ensure_running(root: Path = DEFAULT_ROOT, *, only_missing_from: dict[str, str]) -> list[str]:
    """Start the embedded services whose URL variable is absent from `only_missing_from`,
    and put their URLs into os.environ so settings read them like any external service.

    Called only by commands whose job is to run the system (`python -m devrun`); importing
    settings never starts anything. Returns the names of the embedded services in use.
    """
    stack = Stack(root)
    wanted = [
        name for name, svc in stack.services.items() if not only_missing_from.get(svc.env_var)
    ]
    if not wanted:
        return []
    try:
        stack.up(wanted)
    except ServiceError as exc:
        raise SystemExit(f"embedded services could not start: {exc}") from exc
    for name in wanted:
        service = stack.services[name]
        os.environ[service.env_var] = service.url()
    return wanted


def adopt_running(root: Path = DEFAULT_ROOT) -> list[str]:
    """Point unset URL variables at embedded services that are already running; start none.

    `manage.py` calls this, so that after `make run` (or `python -m devstack up`) an
    operator's `python manage.py erase_user ...` finds the same servers. A service that is
    not running stays unset, and settings then name the variable that is missing.
    """
    stack = Stack(root)
    adopted = []
    for name, service in stack.services.items():
        if os.environ.get(service.env_var) or service.read_state() is None:
            continue
        if service.is_running():
            os.environ[service.env_var] = service.url()
            adopted.append(name)
    return adopted

"""The set of embedded services under one project-local folder."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from devstack.services import SERVICE_CLASSES, EmbeddedService, ServiceError

PROJECT_DIR = Path(__file__).resolve().parent.parent
DEFAULT_ROOT = PROJECT_DIR / ".devstack"


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


def ensure_running(root: Path = DEFAULT_ROOT, *, only_missing_from: dict[str, str]) -> None:
    """Start the embedded services whose URL variable is absent from `only_missing_from`,
    and put their URLs into os.environ so settings read them like any external service."""
    stack = Stack(root)
    wanted = [
        name for name, svc in stack.services.items() if not only_missing_from.get(svc.env_var)
    ]
    if not wanted:
        return
    try:
        stack.up(wanted)
    except ServiceError as exc:
        raise SystemExit(f"embedded services could not start: {exc}") from exc
    for name in wanted:
        service = stack.services[name]
        os.environ[service.env_var] = service.url()

"""Pytest fixtures for the simulator. Register with ``pytest_plugins = [...]`` or import them.

Function-scoped on purpose: every test gets a fresh server, fresh config and empty state,
so knobs flipped in one test can never leak into the next.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .app import OuraSimulator
from .config import SimulatorConfig
from .testing import WebhookReceiver


@pytest.fixture
def oura_sim_config() -> SimulatorConfig:
    """Override this fixture to start ``oura_sim`` with different knobs."""
    return SimulatorConfig()


@pytest.fixture
def oura_sim(oura_sim_config: SimulatorConfig) -> Iterator[OuraSimulator]:
    sim = OuraSimulator(oura_sim_config)
    sim.start()
    try:
        yield sim
    finally:
        sim.stop()


@pytest.fixture
def oura_webhook_receiver() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    receiver.start()
    try:
        yield receiver
    finally:
        receiver.stop()

"""Oura Cloud API simulator: the only stand-in for api.ouraring.com in tests, demos, benchmarks.

Importable without Django settings. Public API (keep stable; documented in README.md):

``OuraSimulator(config: SimulatorConfig | None = None)``
    ``.start(host="127.0.0.1", port=0) -> str`` (base URL), ``.stop()``, ``.base_url``,
    ``.config`` (mutable while running), context manager.
Users
    ``.add_user(oura_user_id=None, *, email=None, history_days=None, scopes=None) -> SimUser``,
    ``.user(id)``, ``.users``, ``.set_login(id)``, ``.deny_next_authorization()``,
    ``.set_membership_lapsed(id, lapsed=True)``.
Tokens
    ``.issue_tokens(id, scopes=None) -> dict``, ``.expire_access_token(token)``,
    ``.revoke_token(token)``, ``.revoked_tokens``.
Documents
    ``.put_document(id, data_type, document=None, *, emit=True, day=None) -> dict``,
    ``.delete_document(id, data_type, object_id, emit=True)``,
    ``.documents(id, data_type, start=None, end=None) -> list[dict]``,
    ``.get_document(id, data_type, object_id)``.
Webhooks
    ``.subscriptions``, ``.expire_subscription(sub_id)``, ``.deliveries``,
    ``.wait_for_deliveries(timeout=10) -> list[Delivery]``.
Request log
    ``.requests`` (``RequestRecord(timestamp, method, path, token_or_client, status)``),
    ``.reset_requests()``.

Pytest fixtures live in ``oura_simulator.pytest_plugin`` (``oura_sim``, ``oura_sim_config``,
``oura_webhook_receiver``); ``oura_simulator.testing.WebhookReceiver`` is a tiny callback
server that answers challenges and records signed deliveries.
"""

from .app import OuraSimulator
from .config import SimulatorConfig
from .store import RequestRecord, SimUser
from .webhooks import Delivery, sign

__all__ = ["Delivery", "OuraSimulator", "RequestRecord", "SimUser", "SimulatorConfig", "sign"]

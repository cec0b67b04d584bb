"""Every knob of the simulator in one mutable dataclass.

The facade keeps a reference to one instance and the request handlers read it on every
request, so tests may flip fields while the server runs (``sim.config.error_rate = 0.5``).
Reads of single attributes are atomic under the GIL, which is all the thread safety we need.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Scope names a user grants when the authorize request names none. Undocumented names
# (stress, heart_health, ring_configuration) are included because the live API gates
# collections on them (CONTRACT 2.3).
ALL_SCOPES: tuple[str, ...] = (
    "email",
    "personal",
    "daily",
    "heartrate",
    "workout",
    "tag",
    "session",
    "spo2",
    "stress",
    "heart_health",
    "ring_configuration",
)

DEFAULT_HISTORY_DAYS = 5 * 365 + 2


@dataclass
class SimulatorConfig:
    # --- application credentials and OAuth -------------------------------------------------
    client_id: str = "sim-client-id"
    client_secret: str = "sim-client-secret"  # noqa: S105  dev default, env overrides
    # Empty list accepts any redirect_uri (handy in dev); otherwise exact match (CONTRACT 2.1).
    redirect_uris: list[str] = field(default_factory=list)
    issuer: str = "https://moi.ouraring.com/oauth/v2/ext/oauth-anonymous"
    include_iss: bool = True
    access_token_ttl_s: int = 86400
    auth_code_ttl_s: int = 600
    default_scopes: tuple[str, ...] = ALL_SCOPES
    # "401" answers {"detail": "Token is not authorized access <scope> scope."};
    # "empty" answers 200 with an empty envelope (both seen live, CONTRACT 2.3).
    missing_scope_mode: str = "401"

    # --- synthetic data ---------------------------------------------------------------------
    seed: int = 0
    history_days: int = DEFAULT_HISTORY_DAYS
    # ISO date of the last generated day; None means "today (UTC)" evaluated per request.
    history_end: str | None = None
    document_page_size: int = 1000
    timeseries_page_size: int = 1000
    include_meta: bool = False  # S129-only `meta` object on documents
    include_producer_timestamp: bool = False  # 2026 heartrate rows
    omit_timestamp_unix: bool = False  # 2024 time-series rows had none
    omit_cardiovascular_age_id: bool = False  # 2024 cardiovascular_age docs had no id
    sandbox_history_days: int = 120

    # --- failure injection (data routes only) --------------------------------------------------
    error_rate: float = 0.0
    error_statuses: tuple[int, ...] = (500, 502, 503)
    latency_ms: int = 0
    timeout_rate: float = 0.0
    timeout_hang_s: float = 35.0
    force_next_statuses: list[int] = field(default_factory=list)
    # Collections whose routes (list, single document, sandbox twin) do not exist on this
    # server: they answer the framework's bare 404 {"detail": "Not Found"}, as an unknown
    # route does (CONTRACT 3.6). An Oura-compatible server lacking vO2_max has been seen.
    missing_collections: set[str] = field(default_factory=set)

    # --- rate limits (CONTRACT 6) ---------------------------------------------------------------
    rate_limit_per_token: int = 5000
    rate_limit_per_app: int = 5000
    rate_limit_window_s: float = 300.0

    # --- webhook subscriptions (CONTRACT 5.2/5.3/5.6) -------------------------------------------
    subscription_ttl_days: float = 90.0
    unknown_subscription_status: int = 403  # 404 mirrors the hand-edited cassettes
    duplicate_subscription_409: bool = False
    challenge_timeout_s: float = 10.0
    rechallenge_on_callback_change: bool = True

    # --- webhook emitter (CONTRACT 5.4/5.5) -----------------------------------------------------
    webhook_delay_s: float = 0.0
    retry_delays_s: list[float] = field(
        default_factory=lambda: [0.05, 0.1, 0.2, 0.3, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]
    )
    max_retries_per_class: int = 10
    delivery_timeout_s: float = 10.0
    success_on_3xx: bool = False
    sign_with_wrong_key: bool = False
    wrong_signing_key: str = "not-the-client-secret"
    signature_lowercase: bool = False
    stale_timestamp_s: int = 0
    pretty_print_body: bool = False
    duplicate_delivery: bool = False
    out_of_order: bool = False
    out_of_order_batch: int = 2

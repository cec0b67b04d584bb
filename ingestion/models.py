"""Raw events: the index of everything received from Oura, and its outbox state."""

from __future__ import annotations

import uuid

from django.db import models
from django.db.models import Q
from django.utils import timezone

from core.db import health_table


class RawEvent(models.Model):
    """One raw thing from Oura: a webhook delivery, a fetched document or a backfill page.

    The row is written in the same transaction that accepts the event, with the envelope
    bytes inline (`envelope`), so Postgres is the first durable copy. The relay then archives
    the envelope to S3, records `object_key` and `sha256`, and clears `envelope`; it also
    publishes rows whose `published_at` is still empty.
    """

    class Kind(models.TextChoices):
        WEBHOOK = "webhook"
        DOCUMENT = "document"
        PAGE = "page"

    class Status(models.TextChoices):
        ACCEPTED = "accepted"
        ORPHAN = "orphan", "orphan (no connection for this Oura user)"
        DROPPED = "dropped", "dropped (connection revoked)"
        TOMBSTONE = "tombstone", "tombstone (document deleted at Oura)"

    event_id = models.UUIDField(default=uuid.uuid4, editable=False)
    provider = models.CharField(max_length=20, default="oura")
    kind = models.CharField(max_length=10, choices=Kind.choices)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.ACCEPTED)
    dedupe_key = models.CharField(max_length=64, help_text="sha256 of the provider's identity")
    user_id = models.CharField(max_length=64, blank=True, help_text="our user id, if known")
    provider_user_id = models.CharField(max_length=128, blank=True)
    data_type = models.CharField(max_length=40, blank=True)
    event_type = models.CharField(max_length=10, blank=True)
    object_id = models.CharField(max_length=128, blank=True)
    event_time = models.DateTimeField(null=True, blank=True)
    received_at = models.DateTimeField(default=timezone.now)
    envelope = models.BinaryField(null=True, blank=True, editable=False)
    # The W3C traceparent of the request that accepted the event: the relay's later work on
    # this row (archive, republish) joins the same trace. Ids only, no person.
    trace_parent = models.CharField(
        max_length=55, blank=True, default="", db_default="", editable=False
    )
    object_key = models.CharField(max_length=512, blank=True)
    sha256 = models.CharField(max_length=64, blank=True)
    size_bytes = models.IntegerField(null=True, blank=True)
    archived_at = models.DateTimeField(null=True, blank=True)
    published_at = models.DateTimeField(null=True, blank=True)
    publish_subject = models.CharField(max_length=200, blank=True)

    class Meta:
        db_table = health_table("raw_events_index")
        constraints = [
            models.UniqueConstraint(fields=["provider", "event_id"], name="raw_event_id_uniq"),
            models.UniqueConstraint(fields=["provider", "dedupe_key"], name="raw_dedupe_uniq"),
        ]
        indexes = [
            # The relay's two work queues stay small; partial indexes keep them cheap to scan.
            models.Index(
                fields=["received_at"], name="raw_unarchived_idx",
                condition=Q(archived_at__isnull=True),
            ),
            models.Index(
                fields=["received_at"], name="raw_unpublished_idx",
                condition=Q(published_at__isnull=True) & ~Q(publish_subject=""),
            ),
            models.Index(fields=["user_id", "received_at"], name="raw_user_idx"),
        ]  # fmt: skip

    def __str__(self) -> str:
        return f"{self.kind} {self.event_id}"


class OuraConnection(models.Model):
    """Our user's link to their Oura account, with OAuth tokens encrypted at rest.

    `access_token_enc` and `refresh_token_enc` hold Fernet ciphertext (ingestion/crypto.py);
    the clear tokens exist only in memory while a request to Oura is made.
    """

    class Status(models.TextChoices):
        ACTIVE = "active"
        NEEDS_REAUTH = "needs_reauth"
        REVOKED = "revoked"

    user_id = models.CharField(max_length=64, unique=True)
    provider_user_id = models.CharField(
        max_length=128, unique=True, help_text="Oura personal_info.id (webhook user_id)"
    )
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.ACTIVE)
    scopes = models.JSONField(default=list)
    access_token_enc = models.BinaryField(null=True, editable=False)
    refresh_token_enc = models.BinaryField(null=True, editable=False)
    access_token_expires_at = models.DateTimeField(null=True)
    token_version = models.PositiveIntegerField(
        default=0, help_text="bumped on every refresh; guards concurrent refreshes"
    )
    connected_at = models.DateTimeField(default=timezone.now)
    last_refresh_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = health_table("oura_connections")

    def __str__(self) -> str:
        return f"{self.user_id} ↔ oura {self.provider_user_id} ({self.status})"


class OAuthState(models.Model):
    """A pending connect, bound to one user and then to the one browser that opened it.

    The API hands out a one-time ticket; the browser that opens it gets the `state` sent to
    Oura and a cookie whose nonce is kept here as a hash, and only that browser can finish.
    """

    # Unique yet empty until set: NULLs never collide in a unique index.
    ticket_hash = models.CharField(max_length=64, unique=True, null=True)  # noqa: DJ001 - unique but optional
    ticket_used_at = models.DateTimeField(null=True, blank=True)
    state_hash = models.CharField(max_length=64, unique=True, null=True)  # noqa: DJ001 - unique but optional
    browser_nonce_hash = models.CharField(max_length=64, blank=True, default="")
    user_id = models.CharField(max_length=64)
    code_verifier_enc = models.BinaryField(editable=False)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = health_table("oura_oauth_states")

    def __str__(self) -> str:
        return f"oauth state for {self.user_id}"


class WebhookSubscription(models.Model):
    """Our mirror of one Oura webhook subscription (event_type x data_type)."""

    subscription_id = models.CharField(max_length=64, unique=True)
    event_type = models.CharField(max_length=10)
    data_type = models.CharField(max_length=40)
    callback_url = models.URLField(max_length=500)
    expiration_time = models.DateTimeField()
    created_at = models.DateTimeField(default=timezone.now)
    renewed_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = health_table("oura_webhook_subscriptions")
        constraints = [
            models.UniqueConstraint(
                fields=["callback_url", "event_type", "data_type"], name="subscription_kind_uniq"
            )
        ]

    def __str__(self) -> str:
        return f"{self.event_type}:{self.data_type} until {self.expiration_time:%Y-%m-%d}"


class RateLimitWindow(models.Model):
    """The shared Oura request budget: one row per app and window, counted in Postgres.

    Every process (web, normalizer, workers) takes from the same row with an atomic UPDATE,
    so the budget holds across processes and machines.
    """

    bucket = models.CharField(max_length=64)
    window_start = models.DateTimeField()
    used = models.PositiveIntegerField(default=0)
    blocked_until = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = health_table("oura_rate_limit_windows")
        constraints = [
            models.UniqueConstraint(fields=["bucket", "window_start"], name="rate_window_uniq")
        ]

    def __str__(self) -> str:
        return f"{self.bucket} {self.window_start:%H:%M:%S} used={self.used}"


class CircuitBreaker(models.Model):
    """One Oura endpoint class's circuit breaker, shared by every process (circuit_breaker.py).

    `state` is closed, open (refusing calls until `opened_until`, then one probe may go) or
    half_open (a probe holds the lease until `probe_lease_until`). Written only by
    ingestion/circuit_breaker.py, with one conditional UPDATE per transition.
    """

    class State(models.TextChoices):
        CLOSED = "closed"
        OPEN = "open"
        HALF_OPEN = "half_open"

    endpoint = models.CharField(max_length=64, primary_key=True)
    state = models.CharField(max_length=16, choices=State.choices, default=State.CLOSED)
    consecutive_failures = models.PositiveIntegerField(default=0)
    # How many times it opened since it was last closed: the next open lasts
    # OURA_BREAKER_OPEN_S * 2**open_streak, capped at OURA_BREAKER_MAX_OPEN_S.
    open_streak = models.PositiveIntegerField(default=0)
    opened_until = models.DateTimeField(null=True, blank=True)
    probe_lease_until = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = health_table("oura_circuit_breakers")

    def __str__(self) -> str:
        return f"{self.endpoint} {self.state}"

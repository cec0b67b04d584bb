"""API keys for consumers of the REST API."""

from __future__ import annotations

from datetime import datetime

from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.utils import timezone

from core.db import health_table


class Scope(models.TextChoices):
    READ = "health:read", "Read normalized health data"
    SYNC = "health:sync", "Start and watch backfill jobs"
    CONNECT = "health:connect", "Connect and disconnect Oura accounts"


class ApiKey(models.Model):
    """A bearer key. Only its SHA-256 is stored; the key itself is shown once at creation.

    Keys are 256-bit random strings, so a fast hash is enough: there is nothing to brute-force.
    """

    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, unique=True, help_text="Shown to identify a key.")
    key_hash = models.CharField(max_length=64, unique=True)
    scopes = ArrayField(models.CharField(max_length=32, choices=Scope.choices), default=list)
    all_users = models.BooleanField(
        default=False, help_text="May act on every user; otherwise only on allowed_user_ids."
    )
    allowed_user_ids = ArrayField(models.CharField(max_length=64), default=list, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = health_table("api_keys")
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_authenticated(self) -> bool:
        # DRF treats request.user as the principal; an ApiKey stands in for it.
        return True

    def is_active(self, now: datetime | None = None) -> bool:
        now = now or timezone.now()
        if self.revoked_at is not None:
            return False
        return self.expires_at is None or self.expires_at > now

    def may_access_user(self, user_id: str) -> bool:
        return self.all_users or user_id in self.allowed_user_ids

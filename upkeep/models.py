"""The last tick each upkeep task claimed: what keeps one tick from running twice."""

from __future__ import annotations

from django.db import models

from core.db import health_table


class UpkeepTick(models.Model):
    """One row per task, moved forward by one conditional upsert (services.upkeep_tick_claim).

    A scheduler runs a tick only if it moved `last_tick` forward; a second scheduler that
    fires the same tick finds it already there and skips.
    """

    task = models.CharField(max_length=40, primary_key=True)
    last_tick = models.DateTimeField()
    claimed_by = models.CharField(max_length=120, help_text="host:pid of the scheduler")
    claimed_at = models.DateTimeField()

    class Meta:
        db_table = health_table("upkeep_tick")

    def __str__(self) -> str:
        return f"{self.task} @ {self.last_tick:%Y-%m-%d %H:%M:%S}"

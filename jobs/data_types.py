"""Which Oura collections a backfill can page, how, and which OAuth scope each needs.

Names are Oura's REST collection names (`vO2_max` with a capital O), because that is what the
page messages carry (`collection`) and what the normalizer dispatches on.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta


@dataclass(frozen=True)
class DataType:
    name: str
    # Any one of these granted scopes unlocks the collection (CONTRACT 2.3). Requesting a
    # collection without its scope answers 401, which the Oura client would read as a dead
    # token and mark the connection needs_reauth, so such types are never requested.
    scopes: tuple[str, ...]
    timeseries: bool = False
    # Document collections have one or a few documents per day: 30 days keeps a page around
    # 30 documents (a few hundred KB at most) and 5 years at 61 requests per type. Time series
    # are paged by Oura at 1000 rows anyway; a week keeps a window's token chain short.
    window_days: int = 30
    # Part of "every type" when a request names none.
    default: bool = True


_TYPES = (
    DataType("daily_activity", ("daily",)),
    DataType("daily_readiness", ("daily",)),
    DataType("daily_sleep", ("daily",)),
    DataType("sleep", ("daily",)),
    DataType("workout", ("workout",)),
    DataType("session", ("session",)),
    DataType("daily_stress", ("daily",)),
    DataType("daily_spo2", ("spo2", "spo2Daily")),
    DataType("daily_resilience", ("stress",)),
    DataType("daily_cardiovascular_age", ("heart_health", "daily")),
    DataType("vO2_max", ("heart_health", "daily")),
    DataType("sleep_time", ("daily",)),
    DataType("enhanced_tag", ("tag",)),
    DataType("tag", ("tag",)),  # deprecated by Oura, still served; cheap to keep raw
    DataType("rest_mode_period", ("daily",)),
    # Time series: only when asked for by name. Five years of heart rate is about two million
    # rows (2000+ requests), nothing in normalized/ stores them yet, and they would break the
    # "no more requests than windows x types" budget of a default backfill.
    DataType("heartrate", ("heartrate",), timeseries=True, window_days=7, default=False),
    DataType(
        "ring_battery_level",
        ("ring_configuration",),
        timeseries=True,
        window_days=7,
        default=False,
    ),
)
# ring_configuration is not date-ranged (it ignores start/end), so a ranged backfill of it
# means nothing; it is left to the webhook path.

DATA_TYPES: dict[str, DataType] = {t.name: t for t in _TYPES}
DEFAULT_TYPES: tuple[str, ...] = tuple(t.name for t in _TYPES if t.default)
# Webhooks spell it vo2_max; the REST path (and our messages) say vO2_max.
ALIASES = {"vo2_max": "vO2_max"}


def canonical(name: str) -> str:
    return ALIASES.get(name, name)


def granted(data_type: DataType, scopes: list[str] | None) -> bool:
    """Whether a connection's scopes unlock the type. Unknown scopes (empty) are not refused:
    older connections did not record them, and Oura will say so itself."""
    if not scopes:
        return True
    have = {s.removeprefix("extapi:") for s in scopes}
    return bool(have & set(data_type.scopes))


@dataclass(frozen=True)
class Window:
    """Whole UTC days, both ends inclusive."""

    start: date
    end: date

    def query(self, data_type: DataType) -> dict[str, str]:
        """Query parameters that select exactly the documents whose filter instant falls in
        [start 00:00, end+1 00:00) UTC.

        Oura filters `start <= instant <= end` with a bare date read as 00:00 UTC, which makes
        end_date look exclusive for daily_activity, sleep and workout (their instants are not
        at midnight) and inclusive for midnight-stamped daily_readiness/daily_sleep
        (CONTRACT 3.4). A bare end date would therefore lose the last day of one kind and,
        with end = next start, count a midnight document twice for the other. An explicit
        end of 23:59:59 on the last day (what Open Wearables sends on purpose) is right for
        both: Oura's document instants have whole seconds. Time series carry milliseconds,
        so their end is 23:59:59.999.
        """
        if data_type.timeseries:
            return {
                "start_datetime": f"{self.start.isoformat()}T00:00:00+00:00",
                "end_datetime": f"{self.end.isoformat()}T23:59:59.999+00:00",
            }
        return {
            "start_date": self.start.isoformat(),
            "end_date": f"{self.end.isoformat()}T23:59:59",
        }


def windows(start: date, end: date, days: int) -> list[Window]:
    out: list[Window] = []
    cursor = start
    while cursor <= end:
        last = min(end, cursor + timedelta(days=days - 1))
        out.append(Window(cursor, last))
        cursor = last + timedelta(days=1)
    return out

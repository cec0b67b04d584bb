"""The registry of Oura data types: one entry per type, everything else reads it.

Per type it says what Oura does: the REST collection (`/v2/usercollection/{name}`), the name
its webhooks use (`vo2_max` where the REST path says `vO2_max`), the OAuth scopes that unlock
it, whether Oura announces changes by webhook, how a backfill pages it, and how its rows are
shaped (`kind`). What we do with a type's documents (contract, mapper, table) is
`normalized.mappers.TABLES`, keyed by these names and checked to cover every type whose
`kind` is not RAW_ONLY; the layering keeps that half above ingestion, the names stay here.

Names are Oura's REST collection names (`vO2_max` with a capital O), because that is what the
page messages carry (`collection`) and what the normalizer dispatches on. The API accepts the
webhook spelling as an alias on input and lists each type once, by this name.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import date, timedelta


class Kind(enum.StrEnum):
    """How a type's rows are shaped, which decides its read endpoint."""

    DAILY = "daily"  # one document per person and day: joins /oura/daily
    DOCUMENT = "document"  # periods with an id (sleep periods, workouts, sessions)
    INTERVAL = "interval"  # spans a person marks or Oura suggests (rest mode, tags, sleep time)
    TIMESERIES = "timeseries"  # samples without an id (heart rate)
    RAW_ONLY = "raw_only"  # kept raw in S3, no table (yet)


@dataclass(frozen=True)
class DataType:
    name: str
    kind: Kind
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
    # A backfill can page it by date range.
    backfill: bool = True
    # Oura announces its changes by webhook (S137 ExtApiV2DataType), under `webhook_name`.
    webhooks: bool = True
    webhook_name: str = ""

    @property
    def webhook_data_type(self) -> str:
        return self.webhook_name or self.name


_D, _DOC, _I, _TS, _RAW = Kind.DAILY, Kind.DOCUMENT, Kind.INTERVAL, Kind.TIMESERIES, Kind.RAW_ONLY
_TYPES = (
    DataType("daily_activity", _D, ("daily",)),
    DataType("daily_readiness", _D, ("daily",)),
    DataType("daily_sleep", _D, ("daily",)),
    DataType("sleep", _DOC, ("daily",)),
    DataType("workout", _DOC, ("workout",)),
    DataType("session", _DOC, ("session",)),
    DataType("daily_stress", _D, ("daily",)),
    DataType("daily_spo2", _D, ("spo2", "spo2Daily")),
    DataType("daily_resilience", _D, ("stress",)),
    DataType("daily_cardiovascular_age", _D, ("heart_health", "daily")),
    # The webhook enum spells it in lower case, the REST path with a capital O (S137).
    DataType("vO2_max", _D, ("heart_health", "daily"), webhook_name="vo2_max"),
    DataType("sleep_time", _I, ("daily",)),
    DataType("enhanced_tag", _I, ("tag",)),
    DataType("tag", _I, ("tag",)),  # deprecated by Oura, still served
    DataType("rest_mode_period", _I, ("daily",)),
    # Time series: only when asked for by name. Five years of heart rate is about two million
    # rows (2000+ requests), which would break the "no more requests than windows x types"
    # budget of a default backfill. Oura has no webhooks for them.
    DataType(
        "heartrate", _TS, ("heartrate",), timeseries=True, window_days=7, default=False,
        webhooks=False,
    ),
    DataType(
        "ring_battery_level", _RAW, ("ring_configuration",), timeseries=True, window_days=7,
        default=False, webhooks=False,
    ),
    # Not date-ranged (Oura ignores start/end), so a ranged backfill of it means nothing; its
    # webhooks keep the raw copy current.
    DataType(
        "ring_configuration", _RAW, ("ring_configuration",), default=False, backfill=False,
    ),
)  # fmt: skip

DATA_TYPES: dict[str, DataType] = {t.name: t for t in _TYPES}
BACKFILL_TYPES: dict[str, DataType] = {t.name: t for t in _TYPES if t.backfill}
DEFAULT_TYPES: tuple[str, ...] = tuple(t.name for t in _TYPES if t.backfill and t.default)
# Other spellings accepted on input (the webhook's), each naming one registry type.
ALIASES: dict[str, str] = {t.webhook_name: t.name for t in _TYPES if t.webhook_name}
# Webhook data_type -> registry name, for every type Oura announces by webhook.
WEBHOOK_TYPES: dict[str, str] = {t.webhook_data_type: t.name for t in _TYPES if t.webhooks}


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

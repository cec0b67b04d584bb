"""Deterministic synthetic Oura data, generated lazily per (user, type, day).

Nothing is precomputed: each call derives a private RNG from
``sha256(seed|user|type|day)``, so five years of history cost nothing until a range is
requested and two simulator instances with the same seed serve identical documents.
Document ids embed the day ordinal (XOR-masked per user and type) so a single-document
lookup can regenerate just the one day instead of scanning the whole history.
"""

from __future__ import annotations

import functools
import hashlib
import random
import struct
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, timezone
from typing import Any

Doc = dict[str, Any]

DOCUMENT_TYPES: tuple[str, ...] = (
    "daily_activity",
    "daily_cardiovascular_age",
    "daily_readiness",
    "daily_resilience",
    "daily_sleep",
    "daily_spo2",
    "daily_stress",
    "enhanced_tag",
    "rest_mode_period",
    "ring_configuration",
    "session",
    "sleep",
    "sleep_time",
    "tag",
    "vO2_max",
    "workout",
)
TIMESERIES_TYPES: tuple[str, ...] = ("heartrate", "ring_battery_level")
ALL_TYPES: tuple[str, ...] = DOCUMENT_TYPES + TIMESERIES_TYPES

# The webhook enum spells vo2_max in lower case while the REST path is vO2_max (CONTRACT 3.6).
WEBHOOK_TO_REST: dict[str, str] = {"vo2_max": "vO2_max"}
REST_TO_WEBHOOK: dict[str, str] = {v: k for k, v in WEBHOOK_TO_REST.items()}
WEBHOOK_DATA_TYPES: tuple[str, ...] = (
    "tag",
    "enhanced_tag",
    "workout",
    "session",
    "sleep",
    "daily_sleep",
    "daily_readiness",
    "daily_activity",
    "daily_spo2",
    "sleep_time",
    "rest_mode_period",
    "ring_configuration",
    "daily_stress",
    "daily_cardiovascular_age",
    "daily_resilience",
    "vo2_max",
    "meal",
)

# Property names per S137 schema; `fields=` projection only honours these names.
FIELDS: dict[str, tuple[str, ...]] = {
    "daily_activity": (
        "id", "active_calories", "average_met_minutes", "class_5_min", "contributors", "day",
        "equivalent_walking_distance", "high_activity_met_minutes", "high_activity_time",
        "inactivity_alerts", "low_activity_met_minutes", "low_activity_time",
        "medium_activity_met_minutes", "medium_activity_time", "met", "meters_to_target",
        "non_wear_time", "resting_time", "score", "sedentary_met_minutes", "sedentary_time",
        "steps", "target_calories", "target_meters", "timestamp", "total_calories",
    ),
    "daily_cardiovascular_age": ("id", "day", "pulse_wave_velocity", "vascular_age"),
    "daily_readiness": (
        "id", "contributors", "day", "score", "temperature_deviation",
        "temperature_trend_deviation", "timestamp",
    ),
    "daily_resilience": ("id", "day", "contributors", "level"),
    "daily_sleep": ("id", "contributors", "day", "score", "timestamp"),
    "daily_spo2": ("id", "breathing_disturbance_index", "day", "spo2_percentage"),
    "daily_stress": ("id", "day", "day_summary", "recovery_high", "stress_high"),
    "enhanced_tag": (
        "id", "tag_type_code", "start_time", "end_time", "start_day", "end_day", "comment",
        "custom_name",
    ),
    "heartrate": ("timestamp", "timestamp_unix", "bpm", "source"),
    "rest_mode_period": ("id", "end_day", "end_time", "episodes", "start_day", "start_time"),
    "ring_battery_level": ("timestamp", "timestamp_unix", "charging", "in_charger", "level"),
    "ring_configuration": (
        "id", "color", "design", "firmware_version", "hardware_type", "set_up_at", "size",
    ),
    "session": (
        "id", "day", "end_datetime", "heart_rate", "heart_rate_variability", "mood",
        "motion_count", "start_datetime", "type",
    ),
    "sleep": (
        "id", "average_breath", "average_heart_rate", "average_hrv", "awake_time",
        "bedtime_end", "bedtime_start", "day", "deep_sleep_duration", "efficiency",
        "heart_rate", "hrv", "latency", "light_sleep_duration", "low_battery_alert",
        "lowest_heart_rate", "movement_30_sec", "period", "readiness", "readiness_score_delta",
        "rem_sleep_duration", "restless_periods", "sleep_algorithm_version",
        "sleep_analysis_reason", "sleep_phase_30_sec", "sleep_phase_5_min", "sleep_score_delta",
        "time_in_bed", "total_sleep_duration", "type", "ring_id", "app_sleep_phase_5_min",
    ),
    "sleep_time": ("id", "day", "optimal_bedtime", "recommendation", "status"),
    "tag": ("id", "day", "text", "timestamp", "tags"),
    "vO2_max": ("id", "day", "timestamp", "vo2_max"),
    "workout": (
        "id", "activity", "calories", "day", "distance", "end_datetime", "intensity", "label",
        "source", "start_datetime",
    ),
}  # fmt: skip

# Which instant a date filter compares against (CONTRACT 3.4 recommendation). Types not
# listed fall back to `day` at 00:00 UTC; ring_configuration is never date-filtered.
FILTER_FIELD: dict[str, str] = {
    "daily_activity": "timestamp",
    "daily_readiness": "timestamp",
    "daily_sleep": "timestamp",
    "vO2_max": "timestamp",
    "tag": "timestamp",
    "sleep": "bedtime_start",
    "workout": "start_datetime",
    "session": "start_datetime",
    "enhanced_tag": "start_time",
    "rest_mode_period": "start_day",
}


def parse_instant(value: str) -> datetime:
    """Parse an ISO date or date-time; naive values are read as UTC."""
    if len(value) == 10:
        return datetime.combine(date.fromisoformat(value), time(0), UTC)
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


def filter_ts(dtype: str, doc: Doc) -> datetime | None:
    """Canonical instant used for start/end filtering; None means "always in range"."""
    if dtype == "ring_configuration":
        return None
    for key in (FILTER_FIELD.get(dtype), "day", "start_day", "timestamp"):
        if key and isinstance(doc.get(key), str):
            try:
                return parse_instant(doc[key])
            except ValueError:
                continue
    return None


# --------------------------------------------------------------------------------------------
# identifiers and randomness


def _digest(*parts: object) -> bytes:
    return hashlib.sha256("|".join(str(p) for p in parts).encode()).digest()


def rng_for(*parts: object) -> random.Random:
    return random.Random(int.from_bytes(_digest(*parts)[:8], "big"))


def make_id(seed: int, uid: str, dtype: str, day: date, idx: int) -> str:
    raw = bytearray(_digest(seed, uid, dtype, day.isoformat(), idx)[:16])
    mask = struct.unpack(">I", _digest(seed, uid, dtype, "mask")[:4])[0]
    raw[12:16] = struct.pack(">I", ((day.toordinal() << 4) | (idx & 0xF)) ^ mask)
    raw[6] = (raw[6] & 0x0F) | 0x40  # look like uuid4, as real ids do
    raw[8] = (raw[8] & 0x3F) | 0x80
    return str(uuid.UUID(bytes=bytes(raw)))


def decode_id(seed: int, uid: str, dtype: str, doc_id: str) -> tuple[date, int] | None:
    try:
        raw = uuid.UUID(doc_id).bytes
    except ValueError:
        return None
    mask = struct.unpack(">I", _digest(seed, uid, dtype, "mask")[:4])[0]
    packed = struct.unpack(">I", raw[12:16])[0] ^ mask
    try:
        day = date.fromordinal(packed >> 4)
    except ValueError:
        return None
    if make_id(seed, uid, dtype, day, packed & 0xF) != doc_id:
        return None
    return day, packed & 0xF


def make_user_id(seed: int, index: int) -> str:
    # personal_info.id is a non-UUID hex-ish string in the wild (CONTRACT 3.7).
    h = _digest(seed, "user", index).hex()
    return f"{h[:12]}-{h[12:35]}"


# --------------------------------------------------------------------------------------------
# formatting


def _offset_str(minutes: int) -> str:
    sign = "+" if minutes >= 0 else "-"
    m = abs(minutes)
    return f"{sign}{m // 60:02d}:{m % 60:02d}"


def fmt_local(dt: datetime, offset_min: int, millis: bool = False) -> str:
    """Format a naive local wall-clock time with its UTC offset."""
    base = dt.strftime("%Y-%m-%dT%H:%M:%S")
    if millis:
        base += ".000"
    return base + _offset_str(offset_min)


def fmt_utc(epoch_s: int) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")


def _epoch(local: datetime, offset_min: int) -> int:
    return int(local.replace(tzinfo=timezone(timedelta(minutes=offset_min))).timestamp())


# --------------------------------------------------------------------------------------------
# user profile and per-day state


@dataclass(frozen=True)
class Profile:
    """Stable physiology of one synthetic user; derived from (seed, user id)."""

    seed: int
    uid: str
    base_offset_min: int
    dst: bool
    age: int
    sex: str
    height: float
    weight: float
    rhr: int
    vo2: int
    step_goal: int

    def offset_on(self, day: date) -> int:
        # Crude northern-hemisphere DST gives the mixed offsets the recordings show.
        return self.base_offset_min + (60 if self.dst and 4 <= day.month <= 10 else 0)


def make_profile(seed: int, uid: str) -> Profile:
    r = rng_for(seed, uid, "profile")
    # Offsets stay within -08:00..+02:00 so 04:00-local activity stamps never cross the UTC
    # midnight that a bare end_date compares against (keeps daily_activity end-exclusive).
    base, dst = r.choice([(60, True), (0, True), (-300, True), (-480, True), (120, False)])
    sex = r.choice(["male", "female"])
    height = round(r.uniform(1.70, 1.95) if sex == "male" else r.uniform(1.55, 1.80), 2)
    return Profile(
        seed=seed,
        uid=uid,
        base_offset_min=base,
        dst=dst,
        age=r.randint(22, 68),
        sex=sex,
        height=height,
        weight=round(r.uniform(19, 30) * height * height, 1),
        rhr=r.randint(46, 68),
        vo2=r.randint(32, 55),
        step_goal=r.choice([7000, 8000, 10000, 12000]),
    )


@dataclass(frozen=True)
class Workout:
    start: datetime  # naive local
    minutes: int
    activity: str
    intensity: str


@dataclass(frozen=True)
class DayState:
    day: date
    offset: int
    bedtime_start: datetime  # naive local, the evening before `day` or just after midnight
    time_in_bed_s: int
    sleep_score: int
    readiness_score: int
    activity_score: int
    steps: int
    workouts: tuple[Workout, ...]
    has_nap: bool


_ACTIVITIES = (
    ("walking", True),
    ("running", True),
    ("cycling", True),
    ("hiking", True),
    ("strength_training", False),
    ("yoga", False),
    ("swimming", True),
)


@functools.lru_cache(maxsize=8192)
def day_state(profile: Profile, day: date) -> DayState:
    r = rng_for(profile.seed, profile.uid, "state", day.isoformat())
    start_min = r.randint(-90, 120)  # relative to 23:00 the evening before
    bedtime = datetime.combine(day - timedelta(days=1), time(23, 0)) + timedelta(
        minutes=start_min, seconds=r.randint(0, 59)
    )
    workouts = []
    for _ in range(r.choices([0, 1, 2], weights=[45, 45, 10])[0]):
        act, _dist = r.choice(_ACTIVITIES)
        ws = datetime.combine(day, time(r.randint(6, 19), r.choice([0, 10, 20, 30, 40, 50])))
        workouts.append(
            Workout(ws, r.randint(15, 90), act, r.choice(["easy", "easy", "moderate", "hard"]))
        )
    workouts.sort(key=lambda w: w.start)
    sleep_score = max(35, min(98, int(r.gauss(78, 9))))
    return DayState(
        day=day,
        offset=profile.offset_on(day),
        bedtime_start=bedtime,
        time_in_bed_s=r.randint(6 * 3600, 9 * 3600 + 1800) // 300 * 300 + r.randint(0, 299),
        sleep_score=sleep_score,
        readiness_score=max(30, min(99, int(r.gauss(76, 10)))),
        activity_score=max(30, min(100, int(r.gauss(82, 10)))),
        steps=max(800, int(r.gauss(profile.step_goal * 0.95, 3000))),
        workouts=tuple(workouts),
        has_nap=r.random() < 0.08,
    )


# --------------------------------------------------------------------------------------------
# per-type generators


@dataclass(frozen=True)
class GenOptions:
    include_meta: bool = False
    include_producer_timestamp: bool = False
    omit_timestamp_unix: bool = False
    omit_cardiovascular_age_id: bool = False


def _clamp(v: float, lo: int = 1, hi: int = 100) -> int:
    return int(max(lo, min(hi, round(v))))


def _contrib(r: random.Random, center: float, names: tuple[str, ...], null_p: float) -> Doc:
    return {n: (None if r.random() < null_p else _clamp(r.gauss(center, 12))) for n in names}


_READINESS_CONTRIB = (
    "activity_balance",
    "body_temperature",
    "hrv_balance",
    "previous_day_activity",
    "previous_night",
    "recovery_index",
    "resting_heart_rate",
    "sleep_balance",
    "sleep_regularity",
)
_SLEEP_CONTRIB = (
    "deep_sleep",
    "efficiency",
    "latency",
    "rem_sleep",
    "restfulness",
    "timing",
    "total_sleep",
)
_ACTIVITY_CONTRIB = (
    "meet_daily_targets",
    "move_every_hour",
    "recovery_time",
    "stay_active",
    "training_frequency",
    "training_volume",
)


def _hypnogram(r: random.Random, slots: int) -> str:
    """5-minute stage string: 1 deep, 2 light, 3 REM, 4 awake, in ~90 min cycles."""
    out = ["4"] * max(1, r.randint(1, 4))
    while len(out) < slots:
        cycle_pos = (len(out) * 5) % 90
        if cycle_pos < 20:
            stage = r.choices("1224", weights=[6, 3, 3, 1])[0]
        elif cycle_pos < 60:
            stage = r.choices("1234", weights=[2, 8, 1, 1])[0]
        else:
            stage = r.choices("234", weights=[3, 6, 1])[0]
        out.append(stage)
    out = out[:slots]
    out[-1] = "4"
    return "".join(out)


def _sample(
    r: random.Random,
    n: int,
    center: float,
    spread: float,
    ts: str,
    interval: float,
    null_p: float = 0.02,
    decimals: int = 0,
) -> Doc:
    items: list[float | None] = []
    v = center
    for _ in range(n):
        v += r.gauss(0, spread * 0.3) + (center - v) * 0.1
        items.append(
            None if r.random() < null_p else round(v, decimals) if decimals else float(round(v))
        )
    return {"interval": interval, "items": items, "timestamp": ts}


def _sleep_period(p: Profile, st: DayState, r: random.Random, nap: bool) -> Doc:
    if nap:
        start = datetime.combine(
            st.day, time(r.randint(13, 16), r.randint(0, 59), r.randint(0, 59))
        )
        tib = r.randint(20 * 60, 80 * 60)
    else:
        start, tib = st.bedtime_start, st.time_in_bed_s
    end = start + timedelta(seconds=tib)
    slots = max(1, tib // 300)
    hyp = _hypnogram(r, slots)
    deep, light, rem, awake = (hyp.count(c) * 300 for c in "1234")
    total = deep + light + rem
    latency = (len(hyp) - len(hyp.lstrip("4"))) * 300
    ts = fmt_local(start, st.offset, millis=True)
    hr = _sample(r, slots, p.rhr + 8, 4, ts, 300.0)
    hrv = _sample(r, slots, 95 - p.age, 10, ts, 300.0)
    hr_items = [x for x in hr["items"] if x is not None]
    readiness = {
        "contributors": _contrib(r, st.readiness_score, _READINESS_CONTRIB, 0.02),
        "score": st.readiness_score,
        "temperature_deviation": round(r.gauss(0, 0.25), 2),
        "temperature_trend_deviation": round(r.gauss(0, 0.15), 2),
    }
    phases_30 = "".join(c * 10 for c in hyp)
    movement = "".join(r.choices("1234", weights=[80, 12, 6, 2], k=slots * 10))
    return {
        "average_breath": round(r.uniform(12.5, 17.5) * 8) / 8,
        "average_heart_rate": round(sum(hr_items) / max(1, len(hr_items)), 3),
        "average_hrv": int(95 - p.age + r.randint(-8, 8)),
        "awake_time": awake,
        "bedtime_end": fmt_local(end, st.offset),
        "bedtime_start": fmt_local(start, st.offset),
        "day": st.day.isoformat(),
        "deep_sleep_duration": deep,
        "efficiency": _clamp(100 * total / tib),
        "heart_rate": hr,
        "hrv": hrv,
        "latency": latency,
        "light_sleep_duration": light,
        "low_battery_alert": r.random() < 0.02,
        "lowest_heart_rate": int(min(hr_items)) if hr_items else None,
        "movement_30_sec": movement,
        "period": 1 if nap else 0,
        "readiness": None if nap else readiness,
        "readiness_score_delta": r.choice([0, 0, 1, 2]) if nap else 0,
        "rem_sleep_duration": rem,
        "restless_periods": movement.count("2") + movement.count("3"),
        "sleep_algorithm_version": "v2",
        "sleep_analysis_reason": "foreground_sleep_analysis",
        "sleep_phase_30_sec": phases_30,
        "sleep_phase_5_min": hyp,
        "sleep_score_delta": r.choice([0, 0, 1, 3]) if nap else 0,
        "time_in_bed": tib,
        "total_sleep_duration": total,
        "type": r.choice(["sleep", "rest"]) if nap else "long_sleep",
        "ring_id": "gAAAAAB" + _digest(p.uid, "ring").hex()[:40],
        "app_sleep_phase_5_min": hyp,
    }


def _daily_activity(p: Profile, st: DayState, r: random.Random) -> Doc:
    start = datetime.combine(st.day, time(4, 0))
    classes = []
    met_items: list[float | None] = []
    for slot in range(288):
        hour = 4 + slot * 5 // 60
        c = "1" if hour < 7 or hour >= 23 else r.choices("012345", weights=[2, 6, 40, 35, 12, 5])[0]
        classes.append(c)
        base = {"0": 0.0, "1": 0.9, "2": 1.2, "3": 2.2, "4": 4.0, "5": 7.0}[c]
        for _ in range(5):
            met_items.append(round(max(0.9, base + r.gauss(0, 0.2)), 1) if c != "0" else 0.0)
    high = sum(1 for c in classes if c == "5") * 300
    med = sum(1 for c in classes if c == "4") * 300
    low = sum(1 for c in classes if c == "3") * 300
    sed = sum(1 for c in classes if c == "2") * 300
    rest = sum(1 for c in classes if c == "1") * 300
    nonwear = sum(1 for c in classes if c == "0") * 300
    active_cal = int(st.steps * 0.045 + high / 60 * 9 + med / 60 * 5)
    target_meters = p.step_goal + 6000
    ewd = int(st.steps * 0.75)
    bmr = int(10 * p.weight + 625 * p.height - 5 * p.age + (5 if p.sex == "male" else -161))
    return {
        "active_calories": active_cal,
        "average_met_minutes": round(sum(x or 0 for x in met_items) / 1440, 3),
        "class_5_min": "".join(classes),
        "contributors": _contrib(r, st.activity_score, _ACTIVITY_CONTRIB, 0.0),
        "day": st.day.isoformat(),
        "equivalent_walking_distance": ewd,
        "high_activity_met_minutes": int(high / 60 * 7),
        "high_activity_time": high,
        "inactivity_alerts": r.choices([0, 1, 2, 3], weights=[60, 25, 10, 5])[0],
        "low_activity_met_minutes": int(low / 60 * 2.2),
        "low_activity_time": low,
        "medium_activity_met_minutes": int(med / 60 * 4),
        "medium_activity_time": med,
        "met": {
            "interval": 60.0,
            "items": met_items,
            "timestamp": fmt_local(start, st.offset, True),
        },
        "meters_to_target": target_meters - ewd,
        "non_wear_time": nonwear,
        "resting_time": rest,
        "score": st.activity_score,
        "sedentary_met_minutes": int(sed / 60 * 0.1),
        "sedentary_time": sed,
        "steps": st.steps,
        "target_calories": r.choice([350, 450, 550, 650]),
        "target_meters": target_meters,
        "timestamp": fmt_local(start, st.offset),
        "total_calories": bmr + active_cal,
    }


def _workout(p: Profile, st: DayState, w: Workout, r: random.Random) -> Doc:
    has_dist = dict(_ACTIVITIES)[w.activity]
    end = w.start + timedelta(minutes=w.minutes)
    factor = {"easy": 4.0, "moderate": 7.0, "hard": 10.0}[w.intensity]
    speed = {"walking": 80, "running": 170, "cycling": 330, "hiking": 70, "swimming": 35}
    # The live API mixes local and +00:00 stamps within one user (CONTRACT 4.5).
    utc = r.random() < 0.25
    if utc:
        sdt, edt, off = (
            w.start - timedelta(minutes=st.offset),
            end - timedelta(minutes=st.offset),
            0,
        )
    else:
        sdt, edt, off = w.start, end, st.offset
    return {
        "activity": w.activity,
        "calories": round(factor * p.weight * w.minutes / 60 * r.uniform(0.9, 1.1), 3),
        "day": st.day.isoformat(),
        "distance": round(speed.get(w.activity, 80) * w.minutes * r.uniform(0.85, 1.15), 6)
        if has_dist
        else None,
        "end_datetime": fmt_local(edt, off),
        "intensity": w.intensity,
        "label": None,
        "source": r.choice(["confirmed", "autodetected", "manual", "workout_heart_rate"]),
        "start_datetime": fmt_local(sdt, off),
    }


_TAG_CODES = (
    "tag_generic_alcohol",
    "tag_generic_caffeine",
    "tag_generic_fasting",
    "tag_generic_late_meal",
    "tag_generic_nocaffeine",
    "tag_generic_party",
    "tag_generic_sauna",
    "tag_generic_stress",
)


def generate_day(p: Profile, dtype: str, day: date, opts: GenOptions) -> list[Doc]:
    """All generated documents of one type whose generation key is `day` (ids included)."""
    st = day_state(p, day)
    r = rng_for(p.seed, p.uid, dtype, day.isoformat())
    iso = day.isoformat()
    docs: list[Doc] = []
    midnight = f"{iso}T00:00:00+00:00"
    if dtype == "daily_readiness":
        docs.append(
            {
                "contributors": _contrib(r, st.readiness_score, _READINESS_CONTRIB, 0.03),
                "day": iso,
                "score": st.readiness_score,
                "temperature_deviation": round(r.gauss(0, 0.25), 2),
                "temperature_trend_deviation": round(r.gauss(0, 0.15), 2),
                "timestamp": midnight,
            }
        )
    elif dtype == "daily_sleep":
        docs.append(
            {
                "contributors": _contrib(r, st.sleep_score, _SLEEP_CONTRIB, 0.0),
                "day": iso,
                "score": st.sleep_score,
                "timestamp": midnight,
            }
        )
    elif dtype == "daily_activity":
        docs.append(_daily_activity(p, st, r))
    elif dtype == "sleep":
        docs.append(_sleep_period(p, st, r, nap=False))
        if st.has_nap:
            docs.append(_sleep_period(p, st, r, nap=True))
    elif dtype == "workout":
        docs.extend(_workout(p, st, w, r) for w in st.workouts)
    elif dtype == "session":
        if r.random() < 0.3:
            start = datetime.combine(
                day, time(r.randint(7, 21), r.randint(0, 59), r.randint(0, 59))
            )
            dur = r.randint(3, 20) * 60
            n = dur // 5
            ts = fmt_local(start, st.offset, millis=True)
            docs.append(
                {
                    "day": iso,
                    "start_datetime": fmt_local(start, st.offset),
                    "end_datetime": fmt_local(start + timedelta(seconds=dur), st.offset),
                    "type": r.choice(
                        ["breathing", "meditation", "relaxation", "rest", "body_status"]
                    ),
                    "heart_rate": _sample(r, n, p.rhr + 10, 3, ts, 5.0, 0.05, 1),
                    "heart_rate_variability": _sample(r, n, 95 - p.age, 8, ts, 5.0, 0.2, 1),
                    "mood": r.choice(["bad", "worse", "same", "good", "great", None]),
                    "motion_count": _sample(r, n, 18, 8, ts, 5.0, 0.0),
                }
            )
    elif dtype == "daily_spo2":
        docs.append(
            {
                "breathing_disturbance_index": r.randint(0, 30),
                "day": iso,
                "spo2_percentage": None
                if r.random() < 0.02
                else {"average": round(r.uniform(94.5, 99.2), 3)},
            }
        )
    elif dtype == "daily_stress":
        docs.append(
            {
                "day": iso,
                "day_summary": r.choice(["restored", "normal", "normal", "stressful", None]),
                "recovery_high": r.randint(0, 24) * 900,
                "stress_high": r.randint(0, 20) * 900,
            }
        )
    elif dtype == "daily_resilience":
        docs.append(
            {
                "day": iso,
                "contributors": {
                    "sleep_recovery": round(r.uniform(20, 95), 1),
                    "daytime_recovery": round(r.uniform(15, 90), 1),
                    "stress": round(r.uniform(10, 80), 1),
                },
                "level": r.choice(["limited", "adequate", "solid", "strong", "exceptional"]),
            }
        )
    elif dtype == "daily_cardiovascular_age":
        docs.append(
            {
                "day": iso,
                "pulse_wave_velocity": round(r.uniform(5.5, 9.5), 1),
                "vascular_age": max(18, min(100, p.age + r.randint(-6, 6))),
            }
        )
    elif dtype == "vO2_max":
        if (day.toordinal() + p.rhr) % 7 == 0:
            when = datetime.combine(day, time(r.randint(6, 20), r.randint(0, 59), r.randint(0, 59)))
            docs.append(
                {
                    "day": iso,
                    "timestamp": fmt_local(when, st.offset),
                    "vo2_max": p.vo2 + r.randint(-2, 2),
                }
            )
    elif dtype == "sleep_time":
        status = r.choice(["optimal_found", "only_recommended_found", "not_enough_nights"])
        window = None
        if status == "optimal_found":
            s = r.randint(-6, 2) * 900
            window = {"day_tz": st.offset * 60, "start_offset": s, "end_offset": s + 3600}
        docs.append(
            {
                "day": iso,
                "optimal_bedtime": window,
                "recommendation": r.choice(
                    ["earlier_bedtime", "follow_optimal_bedtime", "improve_efficiency"]
                ),
                "status": status,
            }
        )
    elif dtype == "enhanced_tag":
        if r.random() < 0.25:
            when = datetime.combine(day, time(r.randint(8, 23), r.randint(0, 59), r.randint(0, 59)))
            custom = r.random() < 0.15
            has_end = r.random() < 0.3
            end = when + timedelta(minutes=r.randint(10, 180))
            docs.append(
                {
                    "tag_type_code": "custom" if custom else r.choice(_TAG_CODES),
                    "start_time": fmt_local(when, st.offset),
                    "end_time": fmt_local(end, st.offset) if has_end else None,
                    "start_day": iso,
                    "end_day": end.date().isoformat() if has_end else None,
                    "comment": r.choice(["", "", "felt tired", "late dinner"]),
                    "custom_name": "Cold plunge" if custom else None,
                }
            )
    elif dtype == "tag":
        if r.random() < 0.05:
            when = datetime.combine(day, time(r.randint(8, 22), r.randint(0, 59)))
            docs.append(
                {
                    "day": iso,
                    "text": r.choice(["Morning workout", "Headache", None]),
                    "timestamp": fmt_local(when, st.offset),
                    "tags": [
                        r.choice(["tag_generic_workout", "tag_generic_sick", "tag_generic_alcohol"])
                    ],
                }
            )
    elif dtype == "rest_mode_period":
        if (day.toordinal() + p.vo2) % 97 == 0:
            start = datetime.combine(
                day, time(r.randint(8, 20), r.randint(0, 59), r.randint(0, 59))
            )
            end = start + timedelta(days=r.randint(1, 4), hours=r.randint(0, 5))
            docs.append(
                {
                    "end_day": end.date().isoformat(),
                    "end_time": fmt_local(end, st.offset),
                    "episodes": [
                        {
                            "tags": r.sample(
                                ["tag_generic_cold", "tag_sleep_alcohol", "tag_generic_fever"], 2
                            ),
                            "timestamp": fmt_local(start, st.offset, millis=True),
                        }
                    ],
                    "start_day": iso,
                    "start_time": fmt_local(start, st.offset),
                }
            )
    elif dtype == "ring_configuration":
        gen = r.choice([("gen3", "heritage", "3.0.3"), ("gen4", "balance", "4.1.7")])
        docs.append(
            {
                "color": r.choice(["stealth_black", "silver", "brushed_silver", "rose"]),
                "design": gen[1],
                "firmware_version": gen[2],
                "hardware_type": gen[0],
                "set_up_at": fmt_utc(_epoch(datetime.combine(day, time(10, 48, 37)), 0)),
                "size": r.randint(6, 13),
            }
        )
    else:
        raise ValueError(f"not a document type: {dtype}")
    out = []
    for idx, body in enumerate(docs):
        doc: Doc = {"id": make_id(p.seed, p.uid, dtype, day, idx), **body}
        out.append(decorate(dtype, doc, opts))
    return out


def decorate(dtype: str, doc: Doc, opts: GenOptions) -> Doc:
    """Apply the era/compatibility switches of CONTRACT 7.4 to a generated document."""
    if dtype == "daily_cardiovascular_age" and opts.omit_cardiovascular_age_id:
        doc = {k: v for k, v in doc.items() if k != "id"}
    if opts.include_meta:
        ts = filter_ts(dtype, doc) or datetime(1970, 1, 1, tzinfo=UTC)
        doc = {**doc, "meta": {"updated_at": ts.astimezone(UTC).isoformat(), "version": 1}}
    return doc


def ring_setup_days(first: date, last: date) -> list[date]:
    """Ring configurations are keyed by set-up day: one ring, plus an upgrade after 2 years."""
    days = [first]
    if (last - first).days > 730:
        days.append(first + timedelta(days=730))
    return days


def _timeline(p: Profile, utc_day: date) -> list[tuple[int, int, str, str]]:
    """(start_epoch, end_epoch, source, intensity) blocks of sleep/workout around a UTC day."""
    blocks: list[tuple[int, int, str, str]] = []
    for d in (
        utc_day - timedelta(days=1),
        utc_day,
        utc_day + timedelta(days=1),
        utc_day + timedelta(days=2),
    ):
        st = day_state(p, d)
        s = _epoch(st.bedtime_start, st.offset)
        blocks.append((s, s + st.time_in_bed_s, "sleep", ""))
        for w in st.workouts:
            ws = _epoch(w.start, st.offset)
            blocks.append((ws, ws + w.minutes * 60, "workout", w.intensity))
    return blocks


def generate_heartrate(p: Profile, utc_day: date, opts: GenOptions) -> list[Doc]:
    r = rng_for(p.seed, p.uid, "heartrate", utc_day.isoformat())
    t = _epoch(datetime.combine(utc_day, time(0)), 0)
    day_end = t + 86400
    blocks = _timeline(p, utc_day)
    rows: list[Doc] = []
    t += r.randint(0, 120)
    while t < day_end:
        block = next((b for b in blocks if b[0] <= t < b[1]), None)
        if block and block[2] == "workout":
            peak = {"easy": 110, "moderate": 135, "hard": 160}[block[3]]
            rows.append(_hr_row(t, int(r.gauss(peak, 8)), "workout", r, opts))
            t += r.randint(5, 12)
            continue
        if block and block[2] == "sleep":
            rows.append(_hr_row(t, int(r.gauss(p.rhr + 4, 3)), "sleep", r, opts))
            t += 300 + r.randint(-3, 3)
            continue
        if r.random() < 0.9:  # brief clusters while awake, ~5 s apart (CONTRACT 4.7)
            ct = t
            for _ in range(r.randint(1, 3)):
                if ct < day_end:
                    rows.append(_hr_row(ct, int(r.gauss(p.rhr + 22, 7)), "awake", r, opts))
                ct += r.randint(5, 11)
        t += 300 + r.randint(-20, 20)
    return rows


def _hr_row(t: int, bpm: int, source: str, r: random.Random, opts: GenOptions) -> Doc:
    row: Doc = {"bpm": max(38, min(200, bpm)), "source": source, "timestamp": fmt_utc(t)}
    if not opts.omit_timestamp_unix:
        row["timestamp_unix"] = t * 1000
    if opts.include_producer_timestamp:
        row["producer_timestamp"] = t * 1000 + r.randint(-2000, 2000)
    return row


def generate_battery(p: Profile, utc_day: date, opts: GenOptions) -> list[Doc]:
    # A sawtooth: ~4.5 day discharge, ~90 min charge, phase per user.
    cycle = int(4.5 * 86400)
    charge = 90 * 60
    phase = int.from_bytes(_digest(p.seed, p.uid, "battery")[:4], "big") % cycle
    r = rng_for(p.seed, p.uid, "ring_battery_level", utc_day.isoformat())
    start = _epoch(datetime.combine(utc_day, time(0)), 0)
    rows: list[Doc] = []
    for t in range(start, start + 86400, 900):
        pos = (t + phase) % cycle
        if pos < charge:
            level, charging = 15 + int(85 * pos / charge), True
        else:
            level, charging = 100 - int(85 * (pos - charge) / (cycle - charge)), False
        row: Doc = {
            "charging": charging,
            "in_charger": charging,
            "level": max(0, min(100, level + r.randint(-1, 1))),
            "timestamp": fmt_utc(t),
        }
        if not opts.omit_timestamp_unix:
            row["timestamp_unix"] = t * 1000
        rows.append(row)
    return rows


def generate_new(p: Profile, dtype: str, day: date, opts: GenOptions, salt: int) -> Doc:
    """A fresh realistic document for put_document(document=None): new uuid, given day."""
    for idx in range(200):
        # Borrow a generated template from a nearby day; sparse types need a long probe.
        probe = day - timedelta(days=idx + salt % 5)
        docs = generate_day(p, dtype, probe, GenOptions())
        if docs:
            doc = _reday(docs[0], probe, day)
            doc["id"] = str(uuid.uuid4())
            return decorate(dtype, doc, opts)
    raise ValueError(f"cannot generate {dtype}")


def _reday(doc: Doc, old: date, new: date) -> Doc:
    """Shift every ISO date/date-time string in `doc` by (new - old) days."""
    delta = new - old

    def shift(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: shift(x) for k, x in v.items()}
        if isinstance(v, list):
            return [shift(x) for x in v]
        if isinstance(v, str) and len(v) >= 10 and v[4:5] == "-" and v[7:8] == "-":
            try:
                d = date.fromisoformat(v[:10])
            except ValueError:
                return v
            return (d + delta).isoformat() + v[10:]
        return v

    shifted: Doc = shift(doc)
    return shifted

"""Heart rate: mapping, the partitioned table, its partitions, erasure and the read endpoint."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from django.core.cache import cache
from django.db import connection, connections

from normalized import contracts, mappers, services
from normalized.models import HeartRateSample
from normalized.selectors import heartrate_list
from normalized.tests.normalizer_helpers import FIXTURES, fixture_documents
from normalized.timeseries import heartrate_partitions, heartrate_partitions_ensure, heartrate_row

pytestmark = pytest.mark.django_db

EXAMPLE = FIXTURES.parent / "examples" / "heartrate.example.json"
if not EXAMPLE.exists():  # the vendored copy travels with the repository
    EXAMPLE = Path(__file__).resolve().parents[2] / "oura_simulator/tests/contract_data/examples"
    EXAMPLE = EXAMPLE / "heartrate.example.json"


def this_month() -> datetime:
    return datetime.now(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def normalize(user_id: str, samples: list[dict[str, Any]], **kwargs: Any) -> Any:
    kwargs.setdefault("raw_object_key", f"provider=oura/date=2024-12-14/user={user_id}/event=e")
    return services.normalize_documents(
        user_id=user_id, collection="heartrate", documents=samples, **kwargs
    )


def sample(moment: datetime, bpm: int = 60, source: str = "rest") -> dict[str, Any]:
    return {"timestamp": moment.isoformat(), "bpm": bpm, "source": source}


def stored(user_id: str) -> list[tuple[datetime, int, str]]:
    return list(
        HeartRateSample.objects.filter(user_id=user_id)
        .order_by("timestamp")
        .values_list("timestamp", "bpm", "source")
    )


def last_per_timestamp(samples: list[dict[str, Any]]) -> list[tuple[datetime, int, str]]:
    """What the table should hold: one sample per instant, the later one in the page winning."""
    by_moment = {}
    for raw in samples:
        moment = datetime.fromisoformat(raw["timestamp"]).astimezone(UTC)
        by_moment[moment] = (moment, raw["bpm"], raw["source"])
    return [by_moment[moment] for moment in sorted(by_moment)]


def partition_of(user_id: str, moment: datetime) -> str:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT tableoid::regclass::text FROM health.oura_heartrate_samples "
            'WHERE user_id = %s AND "timestamp" = %s',
            [user_id, moment],
        )
        (name,) = cursor.fetchone()
    return str(name)


# --- Mapping ------------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["fixture", "example"])
def test_every_recorded_sample_maps_to_its_timestamp_bpm_and_source(source: str) -> None:
    if source == "fixture":
        documents = fixture_documents("heartrate")
    else:
        documents = json.loads(EXAMPLE.read_text())["data"]
    assert documents
    for raw in documents:
        document = contracts.parse_document("heartrate", raw)
        assert isinstance(document, contracts.HeartRateRow)
        assert heartrate_row(document) == {
            "timestamp": datetime.fromisoformat(raw["timestamp"]),
            "bpm": raw["bpm"],
            "source": raw["source"],
        }


def test_a_bpm_beyond_the_column_is_unmappable_and_the_rest_of_the_page_lands() -> None:
    moment = datetime(2024, 12, 13, 12, tzinfo=UTC)
    result = normalize("user-1", [sample(moment, bpm=40000), sample(moment + timedelta(seconds=5))])
    assert result.violations == ["[0] heartrate document cannot be stored: bpm: outside the "
                                 "smallint column"]  # fmt: skip
    assert "40000" not in result.violations[0]
    assert stored("user-1") == [(moment + timedelta(seconds=5), 60, "rest")]
    with pytest.raises(mappers.UnmappableDocument):
        heartrate_row(contracts.HeartRateRow.model_validate(sample(moment, bpm=-40000)))


# --- Writes -------------------------------------------------------------------------------


def test_the_recorded_page_becomes_one_row_per_instant_the_later_duplicate_winning() -> None:
    documents = fixture_documents("heartrate")
    expected = last_per_timestamp(documents)
    assert len(expected) == len(documents) - 1  # the recording has one instant twice

    result = normalize("user-1", documents)

    assert result.violations == []
    assert result.stored_as_rows
    assert (result.valid, result.samples_written) == (len(documents), len(expected))
    assert stored("user-1") == expected
    # The duplicate instant (awake 92, then workout 107) keeps the later sample of the page.
    assert (datetime(2024, 12, 13, 18, 47, 8, tzinfo=UTC), 107, "workout") in expected
    assert result.days == {date(2024, 12, 13), date(2024, 12, 14)}
    row = HeartRateSample.objects.filter(user_id="user-1").first()
    assert row is not None
    assert row.raw_object_key.endswith("/event=e")
    assert row.normalizer_version == mappers.NORMALIZER_VERSION


def test_writing_a_page_again_changes_nothing_and_an_older_observation_loses() -> None:
    documents = fixture_documents("heartrate")
    now = datetime.now(UTC)
    normalize("user-1", documents, observed_at=now)
    before = stored("user-1")

    again = normalize("user-1", documents, observed_at=now)
    older = normalize(
        "user-1", [dict(d, bpm=200) for d in documents], observed_at=now - timedelta(hours=1)
    )

    assert again.samples_written == len(before)
    assert (older.samples_written, older.skipped_stale) == (0, len(before))
    assert stored("user-1") == before
    assert HeartRateSample.objects.count() == len(before)


def test_samples_land_in_their_months_partition_and_in_default_where_none_exists() -> None:
    recent = this_month() + timedelta(days=2, hours=3)
    old = datetime(2015, 3, 1, 0, 0, 5, tzinfo=UTC)  # before every partition of migration 0005
    normalize("user-1", [sample(old), sample(recent)])

    assert partition_of("user-1", recent) == (
        f"health.oura_heartrate_samples_y{recent:%Y}m{recent:%m}"
    )
    assert partition_of("user-1", old) == "health.oura_heartrate_samples_default"


def test_the_last_instant_of_a_month_goes_to_that_month_and_midnight_utc_to_the_next() -> None:
    first = this_month()
    last_moment = first - timedelta(microseconds=1)
    normalize("user-1", [sample(last_moment), sample(first)])
    previous = first - timedelta(days=1)
    assert partition_of("user-1", last_moment).endswith(f"_y{previous:%Y}m{previous:%m}")
    assert partition_of("user-1", first).endswith(f"_y{first:%Y}m{first:%m}")


def test_samples_of_a_purged_raw_page_say_their_raw_document_is_gone() -> None:
    moment = datetime(2024, 12, 13, 12, tzinfo=UTC)
    purged = "provider=oura/date=2024-12-14/user=user-1/event=purged.json"
    kept = "provider=oura/date=2024-12-14/user=user-1/event=kept.json"
    normalize("user-1", [sample(moment)], raw_object_key=purged)
    normalize("user-1", [sample(moment + timedelta(seconds=5))], raw_object_key=kept)
    normalize("user-2", [sample(moment)], raw_object_key=purged)  # not the key's person: kept

    assert services.raw_objects_forget(object_keys=[purged]) == 1

    keys = HeartRateSample.objects.order_by("user_id", "timestamp")
    assert list(keys.values_list("user_id", "raw_object_key")) == [
        ("user-1", ""), ("user-1", kept), ("user-2", purged),
    ]  # fmt: skip


# --- Partitions ---------------------------------------------------------------------------


def test_migrate_made_the_current_and_coming_months_and_a_default() -> None:
    names = {name for name, _ in heartrate_partitions()}
    month = this_month().date()
    for offset in range(4):
        index = month.year * 12 + month.month - 1 + offset
        assert f"oura_heartrate_samples_y{index // 12}m{index % 12 + 1:02d}" in names
    assert dict(heartrate_partitions())["oura_heartrate_samples_default"] == "DEFAULT"


def test_maintenance_creates_coming_months_moves_default_rows_out_and_is_idempotent() -> None:
    old = datetime(2015, 3, 31, 23, 59, 59, tzinfo=UTC)
    normalize("user-1", [sample(old, bpm=77)])
    normalize("user-2", [sample(old + timedelta(seconds=1), bpm=78)])  # April, also DEFAULT

    report = heartrate_partitions_ensure(today=date(2031, 11, 20))

    assert report.created == [
        date(2015, 3, 1), date(2015, 4, 1),
        date(2031, 11, 1), date(2031, 12, 1), date(2032, 1, 1), date(2032, 2, 1),
    ]  # fmt: skip
    assert report.drained == [date(2015, 3, 1), date(2015, 4, 1)]
    bounds = dict(heartrate_partitions())
    assert bounds["oura_heartrate_samples_y2032m02"] == (
        "FOR VALUES FROM ('2032-02-01 00:00:00+00') TO ('2032-03-01 00:00:00+00')"
    )
    assert partition_of("user-1", old).endswith("_y2015m03")
    assert partition_of("user-2", old + timedelta(seconds=1)).endswith("_y2015m04")
    assert stored("user-1") == [(old, 77, "rest")]
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM health.oura_heartrate_samples_default")
        assert cursor.fetchone() == (0,)

    again = heartrate_partitions_ensure(today=date(2031, 11, 20))
    assert (again.created, again.drained) == ([], [])
    assert dict(heartrate_partitions()) == bounds


def _lock_waiters() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        (count,) = cursor.fetchone()
    return int(count)


def _wait_for_lock_waiters(count: int) -> None:
    deadline = time.monotonic() + 20
    while _lock_waiters() < count:
        assert time.monotonic() < deadline, f"fewer than {count} sessions waiting on a lock"
        time.sleep(0.05)


@pytest.fixture
def may_2013_partition_dropped_after() -> Iterator[None]:
    # A transactional test's DDL outlives it; other tests expect old months in DEFAULT.
    yield
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS health.oura_heartrate_samples_y2013m05")


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("may_2013_partition_dropped_after")
def test_a_write_racing_the_drain_of_its_month_waits_and_lands_in_the_new_partition() -> None:
    normalize("user-1", [sample(datetime(2013, 5, 2, tzinfo=UTC))])  # May 2013: in DEFAULT
    errors: list[str] = []

    def in_thread(name: str, work: Callable[[], object]) -> threading.Thread:
        def run() -> None:
            try:
                work()
            except Exception as exc:  # the test reports it below
                errors.append(f"{name}: {exc!r}")
            finally:
                connections.close_all()

        thread = threading.Thread(target=run)
        thread.start()
        return thread

    # A reader holds DEFAULT, so the drain stops right before its move, holding the parent.
    reader = connections.create_connection("default")
    try:
        with reader.cursor() as cursor:
            cursor.execute("BEGIN")
            cursor.execute("SELECT count(*) FROM health.oura_heartrate_samples_default")
        drain = in_thread("drain", heartrate_partitions_ensure)
        _wait_for_lock_waiters(1)
        # A page for the same month starts now, with the old partition list in view.
        write = in_thread(
            "write", lambda: normalize("user-2", [sample(datetime(2013, 5, 3, tzinfo=UTC))])
        )
        _wait_for_lock_waiters(2)
        with reader.cursor() as cursor:
            cursor.execute("COMMIT")
    finally:
        reader.close()
    drain.join(20)
    write.join(20)

    assert errors == []
    assert partition_of("user-1", datetime(2013, 5, 2, tzinfo=UTC)).endswith("_y2013m05")
    assert partition_of("user-2", datetime(2013, 5, 3, tzinfo=UTC)).endswith("_y2013m05")


def test_a_one_day_read_scans_only_that_months_partition() -> None:
    start = this_month() + timedelta(days=1)
    plan = heartrate_list(user_id="user-1", start=start, end=start + timedelta(days=1)).explain()
    scanned = set(_partitions_in(plan))
    assert scanned == {f"oura_heartrate_samples_y{start:%Y}m{start:%m}"}, plan


def test_a_read_across_a_month_boundary_scans_both_months_and_nothing_else() -> None:
    end = this_month() + timedelta(hours=6)
    start = end - timedelta(days=2)
    plan = heartrate_list(user_id="user-1", start=start, end=end).explain()
    assert set(_partitions_in(plan)) == {
        f"oura_heartrate_samples_y{start:%Y}m{start:%m}",
        f"oura_heartrate_samples_y{end:%Y}m{end:%m}",
    }, plan


def test_a_read_of_a_month_without_partition_scans_only_default() -> None:
    start = datetime(2015, 6, 1, tzinfo=UTC)
    plan = heartrate_list(user_id="user-1", start=start, end=start + timedelta(days=3)).explain()
    assert set(_partitions_in(plan)) == {"oura_heartrate_samples_default"}, plan


def _partitions_in(plan: str) -> list[str]:
    import re

    return re.findall(r"\b(oura_heartrate_samples_(?:y\d{4}m\d{2}|default))\b", plan)


# --- Read API -----------------------------------------------------------------------------

URL = "/v1/health/{}/oura/heartrate"
RANGE = {"start_datetime": "2024-12-13T00:00:00Z", "end_datetime": "2024-12-15T00:00:00Z"}


@pytest.fixture(autouse=True)
def _fresh_throttle() -> None:
    cache.clear()  # throttle counters live in the local-memory cache


@pytest.fixture
def client_for(api_client: Any, make_api_key: Any) -> Any:
    def make(**key_options: Any) -> Any:
        api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {make_api_key(**key_options)}")
        return api_client

    return make


def read_all(client: Any, user_id: str, **params: Any) -> tuple[list[dict[str, Any]], int]:
    samples: list[dict[str, Any]] = []
    cursor = None
    for pages in range(1, 1000):
        query = {**RANGE, **params} | ({"cursor": cursor} if cursor else {})
        response = client.get(URL.format(user_id), query)
        assert response.status_code == 200, response.json()
        body = response.json()
        samples.extend(body["data"])
        cursor = body["nextCursor"]
        if cursor is None:
            return samples, pages
    raise AssertionError("pagination did not end")


def test_paging_through_a_range_returns_every_sample_once_in_order(client_for: Any) -> None:
    documents = fixture_documents("heartrate")
    normalize("user-1", documents)
    normalize("user-2", documents[:10])  # someone else's samples stay out
    expected = [
        {"timestamp": moment.isoformat().replace("+00:00", "Z"), "bpm": bpm, "source": source}
        for moment, bpm, source in last_per_timestamp(documents)
    ]

    samples, pages = read_all(client_for(), "user-1", limit=97)

    assert samples == expected
    assert pages == -(-len(expected) // 97)


def test_the_range_is_start_inclusive_and_end_exclusive(client_for: Any) -> None:
    moment = datetime(2024, 12, 13, 12, tzinfo=UTC)
    normalize("user-1", [sample(moment - timedelta(seconds=1)), sample(moment),
                         sample(moment + timedelta(seconds=1))])  # fmt: skip
    response = client_for().get(
        URL.format("user-1"),
        {"start_datetime": "2024-12-13T12:00:00Z", "end_datetime": "2024-12-13T13:00:01+01:00"},
    )
    assert [s["timestamp"] for s in response.json()["data"]] == ["2024-12-13T12:00:00Z"]


def test_a_key_for_one_person_gets_404_for_another_and_for_nobody(client_for: Any) -> None:
    normalize("user-2", fixture_documents("heartrate")[:5])
    client = client_for(users=("user-1",))
    for user_id in ("user-2", "nobody"):
        response = client.get(URL.format(user_id), RANGE)
        assert response.status_code == 404
        assert response.json()["error"] == "not_found"
        assert "bpm" not in response.content.decode()
    # The refusal comes before the query is read: a bad query says nothing either.
    assert client.get(URL.format("user-2"), {"start_datetime": "x"}).status_code == 404


def test_a_key_without_health_read_gets_403(client_for: Any) -> None:
    response = client_for(scopes=("health:sync",)).get(URL.format("user-1"), RANGE)
    assert response.status_code == 403


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ({}, "start_datetime"),
        ({"end_datetime": "2024-12-15T00:00:00Z"}, "start_datetime"),
        (RANGE | {"start_datetime": "2024-12-13"}, "start_datetime"),  # a date is a naive midnight
        (RANGE | {"start_datetime": "2024-12-13T00:00:00"}, "start_datetime"),  # naive
        (RANGE | {"start_datetime": "2024-12-13T00:00:00 01:00"}, "start_datetime"),  # raw +
        (RANGE | {"start_datetime": "2024-02-30T00:00:00Z"}, "start_datetime"),
        (RANGE | {"start_datetime": "yesterday"}, "start_datetime"),
        (RANGE | {"start_datetime": "9" * 5000}, "start_datetime"),
        (RANGE | {"end_datetime": "9999-12-31T23:59:59-23:59"}, "end_datetime"),  # past year 9999
        (RANGE | {"end_datetime": "2024-12-12T00:00:00Z"}, "end_datetime"),  # reversed
        (RANGE | {"end_datetime": "2024-12-13T00:00:00Z"}, "end_datetime"),  # empty
        (RANGE | {"end_datetime": "2025-12-13T00:00:00Z"}, "end_datetime"),  # a year
        (RANGE | {"limit": "0"}, "limit"),
        (RANGE | {"limit": "5001"}, "limit"),
        (RANGE | {"limit": ""}, "limit"),
        (RANGE | {"cursor": ""}, "cursor"),
        (RANGE | {"cursor": "%%%"}, "cursor"),
        (RANGE | {"cursor": "eyJrIjoiaGVhcnRyYXRlIn0"}, "cursor"),  # {"k":"heartrate"}, no t
        (RANGE | {"cursor": "eyJrIjoiaGVhcnRyYXRlIiwidCI6MX0"}, "cursor"),  # t is a number
    ],
)
def test_a_bad_query_gets_400_in_the_error_shape_naming_the_parameter(
    client_for: Any, query: dict[str, str], parameter: str
) -> None:
    response = client_for().get(URL.format("user-1"), query)
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["error"] == "invalid_request"
    assert parameter in body["fields"], body


def test_a_cursor_of_another_range_or_endpoint_is_refused(client_for: Any) -> None:
    from normalized.serializers import keyset_cursor, time_cursor

    outside = time_cursor("heartrate", datetime(2024, 12, 20, tzinfo=UTC))
    inside = time_cursor("heartrate", datetime(2024, 12, 13, 1, tzinfo=UTC))
    activities = keyset_cursor("activities", datetime(2024, 12, 13, 1, tzinfo=UTC), 1)
    client = client_for()
    for cursor in (outside, activities):
        response = client.get(URL.format("user-1"), RANGE | {"cursor": cursor})
        assert response.status_code == 400
        assert response.json()["fields"]["cursor"]
    assert client.get(URL.format("user-1"), RANGE | {"cursor": inside}).status_code == 200


# --- Erasure ------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_erasure_removes_the_persons_heart_rate_and_later_pages_of_theirs_write_nothing(
    clean_streams: None,
) -> None:
    from privacy.services import user_erase

    documents = fixture_documents("heartrate")[:50]
    normalize("alice", documents)
    normalize("bob", documents)

    request = user_erase(user_id="alice", actor="test")

    assert request.status == "done"
    assert request.receipt["erased"]["rows"]["normalized.HeartRateSample"] == 50
    assert not HeartRateSample.objects.filter(user_id="alice").exists()
    assert HeartRateSample.objects.filter(user_id="bob").count() == 50
    late = normalize("alice", documents)
    assert (late.samples_written, late.skipped_erased) == (0, 50)
    assert not HeartRateSample.objects.filter(user_id="alice").exists()

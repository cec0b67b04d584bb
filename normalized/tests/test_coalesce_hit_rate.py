"""Ranges that keep missing stop being asked for (normalized/coalesce.py, `worthwhile`)."""

from __future__ import annotations

from datetime import UTC, datetime

from ingestion.models import OuraConnection
from normalized import coalesce


def _pair(n: int, collection: str = "workout") -> list[tuple[str, coalesce.Member]]:
    conn = OuraConnection(user_id="u-1", provider_user_id="p-1")
    at = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
    return [(collection, coalesce.Member(f"e-{n}-{i}", f"doc-{n}-{i}", at, conn)) for i in range(2)]


def test_a_collection_whose_ranges_keep_missing_is_fetched_by_id_with_a_probe_now_and_then():
    assert coalesce.plan(_pair(0)), "nothing known yet: coalesce"
    for _ in range(coalesce.HIT_WINDOW):
        coalesce.note("workout", hit=False)
    planned = [bool(coalesce.plan(_pair(n))) for n in range(1, 2 * coalesce.PROBE_EVERY + 1)]
    # Only the probes: one in PROBE_EVERY.
    assert planned.count(True) == 2
    assert planned[coalesce.PROBE_EVERY - 1]
    assert planned[-1]
    # Another collection is judged on its own record.
    assert coalesce.plan(_pair(0, "daily_sleep"))


def test_ranges_come_back_once_they_serve_their_members_again():
    for _ in range(coalesce.HIT_WINDOW):
        coalesce.note("sleep", hit=False)
    assert not coalesce.worthwhile("sleep")
    # The probes (and the members coalesced before) bring hits: the window turns.
    for _ in range(coalesce.HIT_WINDOW // 2):
        coalesce.note("sleep", hit=True)
    assert coalesce.worthwhile("sleep")
    assert coalesce.plan(_pair(0, "sleep"))


def test_too_few_members_seen_is_no_verdict():
    for _ in range(coalesce.MIN_HITS_TO_JUDGE - 1):
        coalesce.note("session", hit=False)
    assert coalesce.worthwhile("session")

"""bench.peers' summary: medians per side, the ratio, and what counts as not accepted.

Pure functions only; the comparison itself needs the peer installed and is run by hand
(bench/README.md, "Side by side with Open Wearables").
"""

from __future__ import annotations

from typing import Any

from bench.peers import non_2xx, summarize


def _run(system: str, rate: float, p99: float, *, bad: int = 0, errors: int = 0) -> dict[str, Any]:
    return {"system": system, "accepted_per_s": rate, "p99_ms": p99, "p50_ms": p99 / 4,
            "non_2xx": bad, "errors": errors}  # fmt: skip


def test_medians_and_ratio_of_interleaved_runs() -> None:
    runs = [
        _run("ours", 430.0, 120.0),
        _run("peer", 180.0, 250.0),
        _run("ours", 410.0, 240.0),
        _run("peer", 160.0, 200.0),
        _run("ours", 435.0, 100.0),
        _run("peer", 196.0, 290.0),
    ]
    summary = summarize(runs)
    assert summary["ours_accepted_per_s_median"] == 430.0
    assert summary["peer_accepted_per_s_median"] == 180.0
    assert summary["ours_p99_ms_median"] == 120.0
    assert summary["peer_p99_ms_median"] == 250.0
    assert summary["ratio"] == 2.39
    assert summary["all_accepted"] is True
    assert summary["non_2xx"] == {"ours": 0, "peer": 0}


def test_rejections_and_connection_errors_are_reported() -> None:
    summary = summarize([_run("ours", 400.0, 100.0, bad=3), _run("peer", 0.0, 1.0, errors=2)])
    assert summary["all_accepted"] is False
    assert summary["non_2xx"] == {"ours": 3, "peer": 2}
    assert summary["ratio"] is None  # no division by a peer that accepted nothing


def test_non_2xx_takes_int_or_json_string_statuses() -> None:
    assert non_2xx({202: 10, 409: 2, 500: 1}) == 3
    assert non_2xx({"200": 5, "401": 4}) == 4

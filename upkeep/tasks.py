"""The upkeep tasks: each one calls a service of the app that owns the work.

A task returns counts only (ids and counts go to the audit log and logs, never health data).
`complete=False` means the service ran but left work undone that it reported rather than
raised (a subscription Oura would not renew); the run is then recorded as "incomplete".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from backoffice.services import expired_purge, raw_retention_purge
from ingestion.rate_budget import purge_old_slots
from ingestion.subscription_services import subscriptions_renew
from jobs.services import jobs_reconcile
from jobs.watchdog import watchdog_run
from normalized.maintenance import read_indexes_repack
from normalized.timeseries import heartrate_partitions_ensure
from privacy.services import erasures_resume


@dataclass(frozen=True)
class TaskResult:
    counts: dict[str, int] = field(default_factory=dict)
    complete: bool = True


@dataclass(frozen=True)
class UpkeepTask:
    name: str
    env_var: str  # where settings.UPKEEP_SCHEDULE[name] comes from, for error messages
    run: Callable[[], TaskResult]


def renew_subscriptions() -> TaskResult:
    report = subscriptions_renew()
    # report.failed holds "event:type (error)" strings; only their number leaves this function.
    counts = {
        "renewed": len(report.renewed),
        "unchanged": len(report.unchanged),
        "failed": len(report.failed),
    }
    return TaskResult(counts=counts, complete=not report.failed)


def purge_raw() -> TaskResult:
    return TaskResult(counts={"rows_purged": raw_retention_purge(actor="scheduler")})


def reconcile_jobs() -> TaskResult:
    report = jobs_reconcile()
    # "jobs_failed" are jobs the reconciler gave up on: a successful repair, not a task error.
    return TaskResult(
        counts={
            "jobs_resent": len(report.resent),
            "jobs_resumed": len(report.resumed),
            "jobs_cancelled": len(report.cancelled),
            "jobs_failed": len(report.failed),
        }
    )


def purge_expired() -> TaskResult:
    # The rate budget's past slots too: no rolling window reaches them any more.
    counts = expired_purge(actor="scheduler") | {"budget_slots_purged": purge_old_slots()}
    return TaskResult(counts=counts)


def resume_erasures() -> TaskResult:
    """Erasures left pending, running (a crash) or failed are run again until done."""
    finished = erasures_resume()
    done = sum(1 for request in finished if request.status == "done")
    return TaskResult(counts={"erasures_done": done}, complete=done == len(finished))


def watchdog() -> TaskResult:
    """Missed webhooks: lapsed subscriptions re-synced, silent types caught up by a job."""
    report = watchdog_run()
    # A subscription the sync could not repair is left undone (the next run tries again);
    # a person whose catch-up was deferred or refused is a finding, not a task error.
    return TaskResult(counts=report.counts(), complete=not report.subscriptions_unrepaired)


def heartrate_partitions() -> TaskResult:
    """The coming months' heart rate partitions, and one for each month found in DEFAULT."""
    report = heartrate_partitions_ensure()
    return TaskResult(
        counts={"partitions_created": len(report.created), "months_drained": len(report.drained)}
    )


def repack_read_indexes() -> TaskResult:
    """The read API's indexes rebuilt packed (normalized/maintenance.py says why)."""
    report = read_indexes_repack()
    return TaskResult(
        counts={
            "indexes_repacked": len(report.repacked),
            "leftovers_dropped": len(report.leftovers_dropped),
            "mb_before": report.bytes_before // 2**20,
            "mb_after": report.bytes_after // 2**20,
        },
        complete=not report.missing,
    )


TASKS: dict[str, UpkeepTask] = {
    task.name: task
    for task in (
        UpkeepTask("renew_subscriptions", "UPKEEP_RENEW_CRON", renew_subscriptions),
        UpkeepTask("purge_raw", "UPKEEP_PURGE_RAW_CRON", purge_raw),
        UpkeepTask("reconcile_jobs", "UPKEEP_RECONCILE_JOBS_CRON", reconcile_jobs),
        UpkeepTask("purge_expired", "UPKEEP_PURGE_EXPIRED_CRON", purge_expired),
        UpkeepTask("resume_erasures", "UPKEEP_RESUME_ERASURES_CRON", resume_erasures),
        UpkeepTask("watchdog", "UPKEEP_WATCHDOG_CRON", watchdog),
        UpkeepTask(
            "heartrate_partitions", "UPKEEP_HEARTRATE_PARTITIONS_CRON", heartrate_partitions
        ),
        UpkeepTask("read_indexes_repack", "UPKEEP_READ_INDEXES_REPACK_CRON", repack_read_indexes),
    )
}

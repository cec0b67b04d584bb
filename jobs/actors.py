"""dramatiq actors of the jobs app. Thin: each one calls a service and nothing else.

Discovered by `dramatiq dramatiq_postgres.django.worker` (it imports every app's `actors`)
and by `manage.py run_worker`. The broker is the dramatiq-postgres one that the
`dramatiq_postgres.django` app installs from settings.DRAMATIQ_BROKER.
"""

from __future__ import annotations

import dramatiq

from jobs.backfill import backfill_run

BACKFILL_QUEUE = "backfill"


@dramatiq.actor(
    queue_name=BACKFILL_QUEUE,
    # A run resumes from its checkpoint, so a retry after a crash repeats no finished page.
    # Oura-side failures are handled inside the run and end the job; retries here are for
    # our own infrastructure (S3, Postgres) failing mid-run.
    max_retries=3,
    min_backoff=5_000,
    max_backoff=120_000,
    # Five years of every type can wait on the shared rate budget for a long time; dramatiq's
    # default 10-minute limit would kill healthy runs.
    time_limit=12 * 3600 * 1000,
)
def run_backfill(job_id: str) -> None:
    backfill_run(job_id=job_id)

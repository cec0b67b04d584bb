"""Idempotent provisioning of everything outside Django's migrations.

Run by `python manage.py provision`. Each step compares what exists with what we want and
changes only the difference, so a second run reports "unchanged" everywhere.

Stream settings, and the reason for each value, are in docs/phase-3/streams.md. In short:
HEALTH_RAW keeps 7 days with a 1-hour duplicate window (Postgres and S3 hold the record),
HEALTH_NORMALIZED 3 days, HEALTH_SYNC the latest status per job, HEALTH_DLQ 30 days. All use
file storage and NATS_STREAM_REPLICAS replicas.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError
from django.conf import settings
from django.core.management import call_command
from django.db import connection
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from core import bus, raw_store

logger = logging.getLogger(__name__)

DAY = 24 * 3600


@dataclass(frozen=True)
class StreamSpec:
    name: str
    subjects: list[str]
    max_age_s: int
    duplicate_window_s: int
    max_msgs_per_subject: int = -1
    description: str = ""


STREAMS: tuple[StreamSpec, ...] = (
    StreamSpec("HEALTH_RAW", ["health.raw.>"], 7 * DAY, 3600, description="raw events"),
    StreamSpec("HEALTH_NORMALIZED", ["health.normalized.>"], 3 * DAY, 120),
    StreamSpec("HEALTH_SYNC", ["health.sync.>"], 7 * DAY, 120, max_msgs_per_subject=1),
    StreamSpec("HEALTH_DLQ", ["health.dlq.>"], 30 * DAY, 120),
)


@dataclass
class ProvisionReport:
    changes: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    def record(self, what: str, changed: bool) -> None:
        (self.changes if changed else self.unchanged).append(what)


def stream_config(spec: StreamSpec) -> StreamConfig:
    return StreamConfig(
        name=spec.name,
        description=spec.description or None,
        subjects=spec.subjects,
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        discard=DiscardPolicy.OLD,
        max_age=float(spec.max_age_s),
        duplicate_window=float(spec.duplicate_window_s),
        max_msgs_per_subject=spec.max_msgs_per_subject,
        num_replicas=settings.NATS_STREAM_REPLICAS,
    )


_COMPARED = (
    "subjects", "retention", "storage", "discard", "max_age", "duplicate_window",
    "max_msgs_per_subject", "num_replicas",
)  # fmt: skip


async def _provision_streams(report: ProvisionReport) -> None:
    nc = await bus.connect(name="provision")
    try:
        js = nc.jetstream()
        for spec in STREAMS:
            wanted = stream_config(spec)
            try:
                info = await js.stream_info(spec.name)
            except NotFoundError:
                await js.add_stream(wanted)
                report.record(f"stream {spec.name} created", True)
                continue
            current = info.config
            differs = [k for k in _COMPARED if getattr(current, k) != getattr(wanted, k)]
            if differs:
                await js.update_stream(wanted)
                report.record(f"stream {spec.name} updated ({', '.join(differs)})", True)
            else:
                report.record(f"stream {spec.name}", False)
    finally:
        await nc.close()


def provision_streams(report: ProvisionReport) -> None:
    asyncio.run(_provision_streams(report))


def _lifecycle_rules() -> list[dict[str, Any]]:
    return [
        {
            "ID": "raw-retention",
            "Filter": {"Prefix": ""},
            "Status": "Enabled",
            "Expiration": {"Days": settings.RAW_RETENTION_DAYS},
        }
    ]


def provision_bucket(report: ProvisionReport) -> None:
    s3 = raw_store.client()
    bucket = settings.S3_BUCKET
    try:
        s3.head_bucket(Bucket=bucket)
        report.record(f"bucket {bucket}", False)
    except ClientError:
        kwargs: dict[str, Any] = {"Bucket": bucket}
        if settings.S3_REGION != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": settings.S3_REGION}
        s3.create_bucket(**kwargs)
        report.record(f"bucket {bucket} created", True)

    rule: dict[str, Any] = {"SSEAlgorithm": settings.S3_SSE}
    if settings.S3_SSE_KMS_KEY_ID:
        rule["KMSMasterKeyID"] = settings.S3_SSE_KMS_KEY_ID
    wanted_sse = {"Rules": [{"ApplyServerSideEncryptionByDefault": rule}]}
    try:
        current = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]
        current_rules = [
            {"ApplyServerSideEncryptionByDefault": r["ApplyServerSideEncryptionByDefault"]}
            for r in current.get("Rules", [])
        ]
    except ClientError:
        current_rules = []
    if current_rules != wanted_sse["Rules"]:
        s3.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration=wanted_sse)
        report.record("bucket default encryption set", True)
    else:
        report.record("bucket default encryption", False)

    wanted_rules = _lifecycle_rules()
    try:
        current_lc = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    except ClientError:
        current_lc = []
    comparable = [
        {k: r.get(k) for k in ("ID", "Filter", "Status", "Expiration")} for r in current_lc
    ]
    if json.dumps(comparable, sort_keys=True) != json.dumps(wanted_rules, sort_keys=True):
        s3.put_bucket_lifecycle_configuration(
            Bucket=bucket, LifecycleConfiguration={"Rules": wanted_rules}
        )
        report.record(f"bucket lifecycle set ({settings.RAW_RETENTION_DAYS}-day expiry)", True)
    else:
        report.record("bucket lifecycle", False)


def provision_database(report: ProvisionReport, *, verbosity: int = 0) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_namespace WHERE nspname = 'health'")
        exists = cursor.fetchone() is not None
        if not exists:
            cursor.execute("CREATE SCHEMA IF NOT EXISTS health")
    report.record("schema health" + ("" if exists else " created"), not exists)
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connection)
    pending = executor.migration_plan(executor.loader.graph.leaf_nodes())
    if pending:
        call_command("migrate", interactive=False, verbosity=verbosity)
        report.record(f"{len(pending)} migrations applied", True)
    else:
        report.record("migrations", False)


def provision_all(*, verbosity: int = 0) -> ProvisionReport:
    report = ProvisionReport()
    provision_database(report, verbosity=verbosity)
    provision_streams(report)
    provision_bucket(report)
    return report

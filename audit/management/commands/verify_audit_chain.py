"""`manage.py verify_audit_chain`: walk the audit log's hash chain; exit 1 at the first broken
link, naming its seq and id (never its contents)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from audit.selectors import audit_chain_verify


class Command(BaseCommand):
    help = "Verify the audit log's hash chain; exit non-zero at the first broken link."

    def handle(self, *args: Any, **options: Any) -> None:
        report = audit_chain_verify()
        if not report.ok:
            raise CommandError(
                f"audit chain broken at seq {report.broken_seq} (entry id {report.broken_id}): "
                f"{report.reason}; {report.verified} entries before it verified"
            )
        self.stdout.write(f"audit chain verified: {report.verified} entries")

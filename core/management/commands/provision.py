from typing import Any

from django.core.management.base import BaseCommand

from core.provisioning import provision_all


class Command(BaseCommand):
    help = (
        "Create or update, idempotently: the Postgres schema `health` and migrations, the "
        "JetStream streams, and the S3 bucket with encryption and retention."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        report = provision_all(verbosity=max(0, options["verbosity"] - 1))
        for line in report.changes:
            self.stdout.write(f"changed    {line}")
        for line in report.unchanged:
            self.stdout.write(f"unchanged  {line}")
        self.stdout.write(self.style.SUCCESS(f"provisioned: {len(report.changes)} change(s)"))

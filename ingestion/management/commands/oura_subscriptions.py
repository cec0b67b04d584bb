from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ingestion.oura_client import OuraError
from ingestion.subscription_services import (
    SyncReport,
    subscriptions_list_remote,
    subscriptions_renew,
    subscriptions_sync,
)


class Command(BaseCommand):
    help = (
        "Oura webhook subscriptions. sync: create one per (event type x data type) we handle "
        "and renew those expiring within 7 days. renew: renew only. list: show Oura's view."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("action", choices=["sync", "list", "renew"])
        parser.add_argument("--callback-url", default=None)

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            if options["action"] == "list":
                for model in subscriptions_list_remote():
                    self.stdout.write(
                        f"{model['id']}  {model['event_type']:6} {model['data_type']:18} "
                        f"expires {model['expiration_time']}  {model['callback_url']}"
                    )
                return
            if options["action"] == "sync":
                report = subscriptions_sync(callback_url=options["callback_url"])
            else:
                report = subscriptions_renew()
        except OuraError as exc:
            raise CommandError(f"Oura: {exc}") from None
        self._print(report)
        if report.failed:
            raise CommandError(f"{len(report.failed)} subscription(s) failed")

    def _print(self, report: SyncReport) -> None:
        for label, names in (
            ("created", report.created),
            ("renewed", report.renewed),
            ("unchanged", report.unchanged),
            ("removed", report.removed),
            ("failed", report.failed),
        ):
            for name in names:
                self.stdout.write(f"{label:10} {name}")
        self.stdout.write(
            f"{len(report.created)} created, {len(report.renewed)} renewed, "
            f"{len(report.unchanged)} unchanged, {len(report.removed)} duplicate(s) removed, "
            f"{len(report.failed)} failed"
        )

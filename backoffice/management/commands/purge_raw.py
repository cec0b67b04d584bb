from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from backoffice.services import raw_retention_purge


class Command(BaseCommand):
    help = "Retention: delete raw objects and index rows older than RAW_RETENTION_DAYS (180)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--older-than-days", type=int, default=None)

    def handle(self, *args: Any, **options: Any) -> None:
        purged = raw_retention_purge(older_than_days=options["older_than_days"])
        self.stdout.write(self.style.SUCCESS(f"purged {purged} raw event(s)"))

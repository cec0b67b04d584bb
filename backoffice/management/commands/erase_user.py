from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from backoffice.services import user_erase


class Command(BaseCommand):
    help = "GDPR erasure: revoke Oura, delete every row, raw object and bus message of a user."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("user_id")
        parser.add_argument("--actor", default="manage.py erase_user")

    def handle(self, *args: Any, **options: Any) -> None:
        report = user_erase(user_id=options["user_id"], actor=options["actor"])
        for label, count in report.rows.items():
            self.stdout.write(f"{label:28} {count} row(s)")
        self.stdout.write(f"{'raw objects':28} {report.objects}")
        self.stdout.write(self.style.SUCCESS("erased"))

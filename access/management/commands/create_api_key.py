from datetime import datetime
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from access.services import api_key_create


class Command(BaseCommand):
    help = "Create an API key and print it once. Requests send it as `Authorization: Bearer`."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--name", required=True)
        parser.add_argument(
            "--scopes", required=True, help="comma-separated: health:read,health:sync,..."
        )
        parser.add_argument("--users", default="", help="comma-separated user ids (default: all)")
        parser.add_argument("--expires", default="", help="ISO date-time when the key expires")

    def handle(self, *args: Any, **options: Any) -> None:
        scopes = [s.strip() for s in options["scopes"].split(",") if s.strip()]
        users = [u.strip() for u in options["users"].split(",") if u.strip()]
        expires_at = None
        if options["expires"]:
            try:
                expires_at = datetime.fromisoformat(options["expires"])
            except ValueError:
                raise CommandError("--expires must be an ISO 8601 date-time") from None
            if expires_at.tzinfo is None:
                raise CommandError("--expires needs a UTC offset, e.g. 2027-01-01T00:00:00+00:00")
        try:
            issued = api_key_create(
                name=options["name"], scopes=scopes, user_ids=users, expires_at=expires_at
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(issued.secret)
        self.stderr.write(
            f"created key {issued.api_key.prefix}… scopes={','.join(issued.api_key.scopes)} "
            f"users={'all' if issued.api_key.all_users else ','.join(users)}; "
            "store it now, it is not shown again"
        )

from datetime import datetime, timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from access.services import api_key_create


class Command(BaseCommand):
    help = "Create an API key and print it once. Requests send it as `Authorization: Bearer`."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--name", required=True)
        parser.add_argument(
            "--scopes", required=True, help="comma-separated: health:read,health:sync,..."
        )
        who = parser.add_mutually_exclusive_group(required=True)
        who.add_argument(
            "--users", default="", help="comma-separated user ids (^[A-Za-z0-9_-]{1,64}$)"
        )
        who.add_argument("--all-users", action="store_true", help="the key may act on every user")
        when = parser.add_mutually_exclusive_group()
        when.add_argument("--expires", default="", help="ISO date-time when the key expires")
        when.add_argument(
            "--expires-days",
            type=int,
            default=None,
            help="days until the key expires (default: API_KEY_DEFAULT_EXPIRY_DAYS, 90)",
        )

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
        if options["expires_days"] is not None:
            if options["expires_days"] < 1:
                raise CommandError("--expires-days must be at least 1")
            expires_at = timezone.now() + timedelta(days=options["expires_days"])
        if not options["all_users"] and not users:
            raise CommandError("name the users (--users a,b) or choose --all-users")
        try:
            issued = api_key_create(
                name=options["name"],
                scopes=scopes,
                user_ids=users,
                all_users=options["all_users"],
                expires_at=expires_at,
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(issued.secret)
        expires = issued.api_key.expires_at
        self.stderr.write(
            f"created key {issued.api_key.prefix}… scopes={','.join(issued.api_key.scopes)} "
            f"users={'all' if issued.api_key.all_users else ','.join(users)} "
            f"expires={expires.isoformat() if expires else '-'}; "
            "store it now, it is not shown again"
        )

"""Write the daily page's stored entries again from the daily tables (the read model,
normalized/daily_entries.py).

    python manage.py daily_entries_rebuild                  # everyone
    python manage.py daily_entries_rebuild --user alice     # one person (repeatable)

Not needed in normal operation: triggers keep the entries in step with every write. For
repairs: after rows were written with the triggers off (`session_replication_role = replica`,
a restore that skipped them), or to check that nothing drifted. One person per transaction,
under their lock, so the normalizer goes on meanwhile; safe to run twice or to stop.
"""

from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from core.identifiers import InvalidUserId, validate_user_id
from normalized import daily_entries


class Command(BaseCommand):
    help = "Write the daily page's stored entries again from the daily tables."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--user", action="append", dest="users", metavar="USER_ID",
            help="Only this person (our user id; repeatable). Default: everyone.",
        )  # fmt: skip

    def handle(self, *args: Any, **options: Any) -> None:
        users: list[str] | None = options["users"]
        for user_id in users or []:
            try:
                validate_user_id(user_id)
            except InvalidUserId as exc:
                raise CommandError(f"--user: {exc}") from None
        began = time.monotonic()
        people = daily_entries.rebuild(user_ids=users)
        self.stdout.write(
            f"daily entries written again for {people} people in {time.monotonic() - began:.1f} s"
        )

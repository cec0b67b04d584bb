"""`python manage.py erase_user USER_ID [--actor WHO]` and `erase_user --resume`.

GDPR erasure through privacy/: tombstones first, then every registered store, S3 (indexed
or not) and every stream, a verification scan that must find nothing, and the receipt in the
audit log. A run that crashed or failed is resumed by `--resume` (the scheduler does too).
"""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from core.identifiers import InvalidUserId
from privacy.models import ErasureRequest
from privacy.services import ErasureIncomplete, erasures_resume, user_erase


class Command(BaseCommand):
    help = "GDPR erasure of one person everywhere, verified; --resume finishes pending ones."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("user_id", nargs="?")
        parser.add_argument("--actor", default="manage.py erase_user")
        parser.add_argument(
            "--resume", action="store_true", help="Run every pending or failed erasure again."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if bool(options["user_id"]) == options["resume"]:
            raise CommandError("give a USER_ID or --resume, not both")
        try:
            if options["resume"]:
                done = erasures_resume()
            else:
                done = [user_erase(user_id=options["user_id"], actor=options["actor"])]
        except InvalidUserId as exc:
            raise CommandError(str(exc)) from None
        except ErasureIncomplete as exc:
            raise CommandError(f"erasure incomplete, run --resume: {exc}") from None
        for request in done:
            self._print(request)

    def _print(self, request: ErasureRequest) -> None:
        receipt = request.receipt
        for store, count in sorted(receipt.get("erased", {}).get("rows", {}).items()):
            self.stdout.write(f"{store:28} {count} removed")
        erased = receipt.get("erased", {})
        self.stdout.write(f"{'raw objects':28} {erased.get('s3_objects', 0)} removed")
        messages = erased.get("stream_messages", {})
        self.stdout.write(f"{'stream messages':28} {json.dumps(messages, sort_keys=True)}")
        found = receipt.get("verification", {}).get("found")
        self.stdout.write(
            self.style.SUCCESS(f"erased (request {request.request_id}; scan found {found})")
        )

"""Rebuild normalized rows from the raw objects in S3, with today's contracts and mappers.

    python manage.py renormalize                                   # every type with rows
    python manage.py renormalize --type daily_sleep --older-than-version 2
    python manage.py renormalize --user alice --since 2025-01-01 --until 2025-03-31
    python manage.py renormalize ... --after-id 123456             # resume a stopped run

Makes no Oura request. See normalized/renormalize.py for what it reads and in which order.
"""

from __future__ import annotations

import argparse
from datetime import date
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from core import bus, raw_store
from core.identifiers import InvalidUserId, validate_user_id
from normalized.renormalize import (
    DEFAULT_BATCH_SIZE,
    NothingToRebuild,
    Progress,
    Selection,
    collections_to_rebuild,
    renormalize,
    rows_older_than,
)


def _day(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError("expected a date, YYYY-MM-DD") from None


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return number


class Command(BaseCommand):
    help = (
        "Rebuild normalized rows from the raw objects in S3 (no Oura requests): by person, "
        "type, day range, or every row written by an older mapping version."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--user", help="Only this person (our user id).")
        parser.add_argument(
            "--type", action="append", default=[], dest="types", metavar="TYPE",
            help="A data type by its registry name or an alias (repeatable). Default: every "
            "type with a document table; heartrate (the time series) only when named.",
        )  # fmt: skip
        parser.add_argument("--since", type=_day, help="First document day, inclusive.")
        parser.add_argument("--until", type=_day, help="Last document day, inclusive.")
        parser.add_argument(
            "--older-than-version", type=_positive, metavar="N",
            help="Only rows whose normalizer_version is below N (read from the objects "
            "they were built from).",
        )  # fmt: skip
        parser.add_argument(
            "--after-id", type=int, default=0, metavar="ID",
            help="Resume after this raw index id (the last one a stopped run names).",
        )  # fmt: skip
        parser.add_argument(
            "--batch-size", type=_positive, default=DEFAULT_BATCH_SIZE,
            help="Raw objects per transaction.",
        )  # fmt: skip

    def handle(self, *args: Any, **options: Any) -> None:
        user_id = options["user"]
        if user_id is not None:
            try:
                validate_user_id(user_id)
            except InvalidUserId as exc:
                raise CommandError(str(exc)) from None
        since, until = options["since"], options["until"]
        if since and until and since > until:
            raise CommandError("--since must not be after --until")
        try:
            collections = collections_to_rebuild(options["types"])
        except NothingToRebuild as exc:
            raise CommandError(str(exc)) from None
        selection = Selection(
            collections=collections, user_id=user_id, since=since, until=until,
            older_than_version=options["older_than_version"], after_id=options["after_id"],
            batch_size=options["batch_size"],
        )  # fmt: skip
        self.stdout.write(f"renormalize {', '.join(collections)}")

        progress = Progress()
        try:
            renormalize(selection, progress=progress, on_batch=self._report)
        except raw_store.RawStoreUnavailable as exc:
            raise CommandError(
                f"S3 unavailable ({exc}); nothing after raw event id {progress.last_id} was "
                f"written. Resume with --after-id {progress.last_id}."
            ) from None
        except bus.BusUnavailable:
            raise CommandError(
                "NATS unavailable: the rows of the batch after raw event id "
                f"{progress.last_id} are written but not announced. Resume with --after-id "
                f"{progress.last_id} to announce them."
            ) from None
        except KeyboardInterrupt:
            raise CommandError(
                f"Interrupted; everything up to raw event id {progress.last_id} is done. "
                f"Resume with --after-id {progress.last_id}."
            ) from None

        self.stdout.write(f"done, {progress.line()}")
        for violation in progress.violations:
            self.stdout.write(f"  invalid: {violation}")
        remaining, without_raw = rows_older_than(selection)
        if remaining:
            self.stdout.write(
                f"{remaining} selected rows are still below version "
                f"{selection.older_than_version} ({without_raw} of them have no raw object "
                "left; the others' objects are missing or their documents invalid)"
            )

    def _report(self, progress: Progress) -> None:
        self.stdout.write(progress.line())

"""`python manage.py replay_dead_letters --id ID | --all`: publish dead letters again."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from core import bus
from core.models import DeadLetter
from core.services import dead_letters_open, dead_letters_replay


class Command(BaseCommand):
    help = "Republish dead-lettered messages to their original subject (fix the cause first)."

    def add_arguments(self, parser: CommandParser) -> None:
        which = parser.add_mutually_exclusive_group(required=True)
        which.add_argument("--id", type=int, action="append", help="A dead letter id (repeatable).")
        which.add_argument("--all", action="store_true", help="Every unresolved dead letter.")
        parser.add_argument("--consumer", help="With --all: only this consumer's dead letters.")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["all"]:
            queryset = dead_letters_open()
            if options["consumer"]:
                queryset = queryset.filter(consumer=options["consumer"])
        else:
            queryset = DeadLetter.objects.filter(pk__in=options["id"])
            missing = set(options["id"]) - set(queryset.values_list("pk", flat=True))
            if missing:
                raise CommandError(f"no dead letter with id {', '.join(map(str, sorted(missing)))}")
        try:
            count = dead_letters_replay(queryset=queryset, actor="cli:replay_dead_letters")
        except bus.BusUnavailable as exc:
            raise CommandError(f"NATS unavailable: {exc}") from None
        self.stdout.write(f"replayed {count} dead letter(s)")

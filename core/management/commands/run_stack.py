from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from core.devrun import run


class Command(BaseCommand):
    help = (
        "Run the whole system locally (make run): simulator, web, relay, normalizer, worker, "
        "and a connected, backfilled demo user receiving webhooks."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--no-demo", action="store_true", help="skip the demo user")

    def handle(self, *args: Any, **options: Any) -> None:
        raise SystemExit(run(with_demo=not options["no_demo"]))

from typing import Any

from django.core.management.base import BaseCommand

from ingestion.connection_services import connections_rotate_keys


class Command(BaseCommand):
    help = (
        "Re-encrypt every stored Oura token under the first key of TOKEN_ENCRYPTION_KEYS. "
        "Run after putting a new key first; then older keys may be removed."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        count = connections_rotate_keys()
        self.stdout.write(self.style.SUCCESS(f"re-encrypted tokens of {count} connection(s)"))

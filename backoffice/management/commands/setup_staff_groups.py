from typing import Any

from django.core.management.base import BaseCommand, CommandError

from backoffice.services import staff_groups_setup


class Command(BaseCommand):
    help = (
        "Create the staff groups (support, privacy officer, operator) with exactly their "
        "rights; idempotent, and removes rights a group should not hold."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            changes = staff_groups_setup()
        except LookupError as exc:
            raise CommandError(str(exc)) from exc
        if options["verbosity"] == 0:
            return
        for name, change in changes.items():
            added, removed = change["added"], change["removed"]
            summary = "unchanged" if not (added or removed) else ""
            if added:
                summary += f"added {', '.join(added)} "
            if removed:
                summary += f"removed {', '.join(removed)}"
            self.stdout.write(f"{name}: {summary.strip()}")

from __future__ import annotations

from django.apps import AppConfig


class UpkeepConfig(AppConfig):
    name = "upkeep"
    verbose_name = "Scheduled upkeep"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from upkeep import checks  # noqa: F401 - registers the schedule check

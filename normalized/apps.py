from django.apps import AppConfig


class NormalizedConfig(AppConfig):
    name = "normalized"

    def ready(self) -> None:
        from core.consumers import register
        from normalized.bus_consumers import PAGES, WEBHOOKS
        from privacy import registry

        register(WEBHOOKS, PAGES)

        for model in (
            "DailyReadiness", "DailySleep", "DailyActivity", "SleepPeriod", "Activity",
            "DeletedDocument", "HeartRateSample", "DailyEntry",
        ):  # fmt: skip
            registry.register_model(f"normalized.{model}", user_field="user_id")

        # Every table the normalizer writes, from the one list of them (normalized.mappers.
        # TABLES): a new data type's table is erased with the rest without another list to
        # keep in step. Re-registering a model named above changes nothing.
        from normalized.mappers import TABLES

        for mapping in TABLES.values():
            registry.register_model(mapping.model._meta.label, user_field="user_id")

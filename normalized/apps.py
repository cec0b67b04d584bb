from django.apps import AppConfig


class NormalizedConfig(AppConfig):
    name = "normalized"

    def ready(self) -> None:
        from privacy import registry

        for model in (
            "DailyReadiness", "DailySleep", "DailyActivity", "SleepPeriod", "Activity",
            "DeletedDocument",
        ):  # fmt: skip
            registry.register_model(f"normalized.{model}", user_field="user_id")

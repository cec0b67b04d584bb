from django.apps import AppConfig


class JobsConfig(AppConfig):
    name = "jobs"

    def ready(self) -> None:
        from privacy import registry

        registry.register_model("jobs.IngestionJob", user_field="user_id")
        registry.register_model("jobs.WatchdogFinding", user_field="user_id")

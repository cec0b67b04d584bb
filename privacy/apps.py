from django.apps import AppConfig


class PrivacyConfig(AppConfig):
    name = "privacy"
    verbose_name = "Privacy (erasure)"

    def ready(self) -> None:
        from privacy import registry

        # core sits below this app and cannot register itself: its dead letters hold copies
        # of bus messages, which name the person.
        registry.register(registry.dead_letter_store())
        registry.register(registry.audit_store())

        from core.scrape_metrics import register_postgres_reader
        from privacy.scrape_metrics import erasure_requests_family

        register_postgres_reader(erasure_requests_family)

from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "core"
    verbose_name = "Platform core"

    def ready(self) -> None:
        # Before any URLconf is imported: `<user_id:user_id>` in every pattern naming a user.
        from django.urls import register_converter

        from core.identifiers import UserIdConverter

        register_converter(UserIdConverter, "user_id")

        from core.scrape_metrics import dead_letters_open_family, register_postgres_reader

        register_postgres_reader(dead_letters_open_family)

        # Tracing is installed here, once settings are loaded and before the WSGI handler
        # builds its middleware chain (the Django instrumentation adds its own middleware).
        from core.tracing import init_tracing

        init_tracing()

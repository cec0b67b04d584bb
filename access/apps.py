from django.apps import AppConfig


class AccessConfig(AppConfig):
    name = "access"

    def ready(self) -> None:
        # Registers the OpenAPI description of API-key authentication with drf-spectacular.
        from access import schema  # noqa: F401 - imported for its registration side effect
        from access.erasure import person_store
        from privacy import registry

        registry.register(person_store())

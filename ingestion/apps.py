from django.apps import AppConfig


class IngestionConfig(AppConfig):
    name = "ingestion"

    def ready(self) -> None:
        from ingestion import erasure
        from privacy import registry

        for store in erasure.person_stores():
            registry.register(store)
        registry.register_identity_resolver(erasure.oura_ids_of)

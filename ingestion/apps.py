from django.apps import AppConfig


class IngestionConfig(AppConfig):
    name = "ingestion"

    def ready(self) -> None:
        from ingestion import erasure
        from privacy import registry

        for store in erasure.person_stores():
            registry.register(store)
        registry.register_identity_resolver(erasure.oura_ids_of)

        from core.scrape_metrics import register_postgres_reader
        from ingestion.scrape_metrics import READERS

        for reader in READERS:
            register_postgres_reader(reader)

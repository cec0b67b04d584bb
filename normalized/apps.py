from django.apps import AppConfig


class NormalizedConfig(AppConfig):
    name = "normalized"

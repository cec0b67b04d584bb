from django.apps import AppConfig


class OuraSimulatorConfig(AppConfig):
    name = "oura_simulator"
    verbose_name = "Oura Cloud simulator"
    default_auto_field = "django.db.models.BigAutoField"

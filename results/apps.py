from django.apps import AppConfig


class ResultsConfig(AppConfig):
    name = "results"
    verbose_name = "Models and results"
    default_auto_field = "django.db.models.BigAutoField"

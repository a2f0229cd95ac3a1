from django.apps import AppConfig


class GeowebConfig(AppConfig):
    name = "geoweb"
    verbose_name = "GeoWeb"

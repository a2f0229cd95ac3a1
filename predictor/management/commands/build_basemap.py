"""`manage.py build_basemap`: build the country outlines the maps draw, once, into the data folder's cache."""
from django.core.management.base import BaseCommand

from predictor import places


class Command(BaseCommand):
    help = ("Build the offline basemap (Natural Earth countries) at each level of detail into GEOWEB_DATA_DIR/cache, "
            "so that a freshly started server serves it at once. `make run` does this; it is quick once built.")

    def handle(self, *args, **options):
        for level in places.BASEMAP_LEVELS:
            data = places.basemap_level(level)
            self.stdout.write(f"basemap {level}: {len(data) / 1000:.0f} KB")

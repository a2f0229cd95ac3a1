"""Copy the front-end libraries installed by `npm ci` into static/vendor/, where templates load them."""
import shutil
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

# (package folder under node_modules, files or folders inside it, target folder under static/vendor)
ASSETS = [
    ("leaflet/dist", ["leaflet.js", "leaflet.css", "images"], "leaflet"),
    ("leaflet.heat/dist", ["leaflet-heat.js"], "leaflet.heat"),
    ("leaflet.markercluster/dist", ["leaflet.markercluster.js", "MarkerCluster.css",
                                    "MarkerCluster.Default.css"], "leaflet.markercluster"),
    ("leaflet.geodesic/dist", ["leaflet.geodesic.umd.min.js"], "leaflet.geodesic"),
]


class Command(BaseCommand):
    help = "Copy Leaflet and its plugins from node_modules/ (installed by `npm ci`) into static/vendor/."

    def handle(self, *args, **options):
        node_modules = Path(settings.BASE_DIR) / "node_modules"
        target_root = Path(settings.BASE_DIR) / "static" / "vendor"
        copied = 0
        for package, names, target in ASSETS:
            source_dir = node_modules / package
            if not source_dir.is_dir():
                raise CommandError(f"{source_dir} is missing: run `npm ci` first.")
            destination = target_root / target
            destination.mkdir(parents=True, exist_ok=True)
            for name in names:
                source = source_dir / name
                if source.is_dir():
                    shutil.copytree(source, destination / name, dirs_exist_ok=True)
                else:
                    shutil.copy2(source, destination / name)
                copied += 1
        self.stdout.write(f"Copied {copied} front-end assets into {target_root}.")

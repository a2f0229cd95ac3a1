"""`manage.py import_game_images`: the best-effort import `make run` does; it never fails the run."""
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand

from games import importing
from games.difficulty import recompute_difficulty


class Command(BaseCommand):
    help = ("Import game images from GEOWEB_GAME_IMAGES (a folder with the Im2GPS metadata CSV, optional "
            "scene_M_p_im2gps.csv and results files, and images/ or a zip), fetching the Im2GPS zip from "
            "GEOWEB_IM2GPS_ZIP_URL when the folder has no photos. Always exits 0 and says what it did.")

    def add_arguments(self, parser):
        parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the network")

    def handle(self, *args, **options):
        folder = Path(settings.GAME_IMAGES_DIR) if settings.GAME_IMAGES_DIR else settings.DATA_DIR / "im2gps"
        for line in importing.import_default(folder=folder, zip_url=settings.IM2GPS_ZIP_URL,
                                             timeout=options["timeout"]):
            self.stdout.write(line)
        counts = recompute_difficulty()
        self.stdout.write(f"difficulty: {counts['easy']} easy, {counts['medium']} medium, {counts['hard']} hard, "
                          f"{counts['']} unrated")

"""`manage.py import_game_images`: the best-effort import `make run` does; it never fails the run."""
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand

from games import importing, selectors, starter
from games.management.commands.import_im2gps import finish_import
from games.models import STARTER_PACK, GameImage


class Command(BaseCommand):
    help = ("Import the starter pack (games/starter_pack/, unless GEOWEB_GAME_STARTER_PACK=0 or GEOWEB_GAME_IMAGES "
            "is set) and the game images in GEOWEB_GAME_IMAGES (photos in images/ or a zip, with optional metadata "
            "and results CSVs), fetching the Im2GPS zip from GEOWEB_IM2GPS_ZIP_URL when that folder has no photos. "
            "Always exits 0 and says what it did.")

    def add_arguments(self, parser):
        parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the network")

    def handle(self, *args, **options):
        if selectors.starter_pack_enabled():
            try:
                report = starter.import_pack()
            except starter.PackError as error:
                self.stdout.write(f"starter pack not imported: {error}")
            else:
                self.stdout.write(f"starter pack: {report.created} created, {report.updated} updated, "
                                  f"{report.unchanged} unchanged, {len(report.skipped)} skipped; "
                                  f"{report.guesses_created} published answers added")
                for what, reason in report.skipped:
                    self.stdout.write(f"  skipped {what}: {reason}")
        elif GameImage.objects.filter(pack=STARTER_PACK).exists():
            self.stdout.write("starter pack: switched off (GEOWEB_GAME_STARTER_PACK=0, or GEOWEB_GAME_IMAGES is set "
                              "without GEOWEB_GAME_STARTER_PACK=1): its photos are not played")
        if settings.GAME_IMAGES_DIR:
            lines = importing.import_default(folder=Path(settings.GAME_IMAGES_DIR), zip_url=settings.IM2GPS_ZIP_URL,
                                             timeout=options["timeout"])
        elif (settings.DATA_DIR / "im2gps").is_dir():
            # The folder earlier versions used by default; never a download without GEOWEB_GAME_IMAGES.
            lines = importing.import_default(folder=settings.DATA_DIR / "im2gps", zip_url="")
        else:
            lines = []
        for line in lines:
            self.stdout.write(line)
        finish_import(self.stdout)

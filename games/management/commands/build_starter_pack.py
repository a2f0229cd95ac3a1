"""`manage.py build_starter_pack`: rebuild games/starter_pack/ from the Im2GPS3k CC photos and the published results."""
import os
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from games import starter

SHARED = Path(os.environ.get("GEOWEB_SHARED_DIR") or settings.BASE_DIR.parent / "shared")


class Command(BaseCommand):
    help = ("Rebuild the starter pack (games/starter_pack/): every photo of --source whose embedded Flickr licence "
            "is open, re-encoded by the image door (WebP, at most 1,024 px, no metadata), with manifest.json and "
            "README.md. Running it twice on the same input gives byte-identical files.")

    def add_arguments(self, parser):
        parser.add_argument("--source", type=Path, default=SHARED / "data" / "im2gps3k-cc" / "photos",
                            help="folder of Im2GPS3k JPEGs with their comments (default: ../shared/data/im2gps3k-cc/"
                                 "photos)")
        parser.add_argument("--results", type=Path, default=SHARED / "data" / "geoestimation" / "results_im2gps3k",
                            help="folder with ISNs_M-fstar-S3.csv and base_M-fstar.csv")
        parser.add_argument("--out", type=Path, default=starter.PACK_DIR, help="the pack folder to write")

    def handle(self, *args, **options):
        try:
            result = starter.build_pack(source=options["source"], results=options["results"], out=options["out"])
        except starter.PackError as error:
            raise CommandError(str(error)) from None
        self.stdout.write(f"starter pack: {result.photos} photos, {result.total_bytes / 1e6:.1f} MB in "
                          f"{options['out']}")
        for name, reason in result.refused:
            self.stdout.write(f"  refused {name}: {reason}")

"""`manage.py clean_game_photos`: pass every stored game photo through the image door (upgrade step)."""
from django.core.management.base import BaseCommand

from games import curation


class Command(BaseCommand):
    help = ("Re-encode every stored game photo that still carries metadata (JPEG comments, EXIF, XMP, IPTC, ICC, "
            "thumbnails) or is larger than the door allows, as imports before this version stored them; store "
            "the clean copy under its content-hash name and delete the original. Safe to re-run.")

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="only count what would be cleaned")

    def handle(self, *args, **options):
        result = curation.clean_stored_photos(dry_run=options["dry_run"])
        verb = "would clean" if options["dry_run"] else "cleaned"
        self.stdout.write(f"game photos: {result.checked} checked, {verb} {result.cleaned}, "
                          f"{len(result.failed)} failed")
        for name, reason in result.failed:
            self.stdout.write(f"  {name}: {reason}")

"""`manage.py make_playable`: the admin's bulk "Make playable", by licence or other filters, for any number."""
from django.core.management.base import BaseCommand, CommandError

from games import curation, licences
from games.models import STARTER_PACK, GameImage


class Command(BaseCommand):
    help = ("Activate game images chosen by licence kind, pack, source ids or all of them. Images whose licence "
            "needs a reason under the policy (docs/play.md) are activated only with --reason, which is stored on "
            "each.")

    def add_arguments(self, parser):
        parser.add_argument("--licence", choices=licences.KINDS, action="append", default=[],
                            help="licence kind(s): " + ", ".join(licences.KINDS))
        parser.add_argument("--pack", choices=[STARTER_PACK, "none"], help="only the starter pack, or only others")
        parser.add_argument("--source-id", action="append", default=[], help="an Im2GPS IMG_ID (repeatable)")
        parser.add_argument("--all", action="store_true", help="every game image")
        parser.add_argument("--reason", default="", help="why images whose licence needs a reason may be shown")
        parser.add_argument("--dry-run", action="store_true", help="only say what would be done")

    def handle(self, *args, **options):
        images = GameImage.objects.order_by("pk")
        if not (options["all"] or options["licence"] or options["pack"] or options["source_id"]):
            raise CommandError("choose images: --licence KIND, --pack, --source-id ID or --all")
        if options["licence"]:
            images = images.filter(licence_kind__in=options["licence"])
        if options["pack"]:
            images = images.filter(pack="" if options["pack"] == "none" else STARTER_PACK)
        if options["source_id"]:
            images = images.filter(source_id__in=options["source_id"])
        chosen = list(images)
        if options["dry_run"]:
            self.stdout.write(f"{len(chosen)} image(s) chosen; nothing changed (--dry-run)")
            return
        result = curation.activate(images=chosen, reason=options["reason"])
        self.stdout.write(f"{len(result.activated)} image(s) playable, {len(result.refused)} refused")
        if result.refused:
            self.stdout.write(f"  refused {len(result.refused)}: their licence needs a reason (--reason \"...\"), "
                              "e.g. " + ", ".join(image.source_id for image in result.refused[:5]))

"""List installed model bundles, which one is active, and which are untrained; optionally switch the active one.

    manage.py models [--activate NAME]
"""
from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from predictor import registry
from predictor.ml import kinds
from predictor.ml.bundle import BundleError


class Command(BaseCommand):
    help = "List installed model bundles (active one marked with *)."

    def add_arguments(self, parser):
        parser.add_argument("--activate", metavar="NAME", help="make this installed bundle the active model")

    def handle(self, *args, activate, **options):
        if activate:
            try:
                registry.set_active(activate)
            except BundleError as error:
                raise CommandError(str(error)) from None
            self.stdout.write(self.style.SUCCESS(f"active model: {activate}"))
        bundles = registry.installed_bundles()
        if not bundles:
            self.stdout.write(f"no model bundles installed in {registry.model_dir()}")
            return
        for bundle in bundles:
            name = kinds.kind_name(bundle.config)
            try:
                about = f"{name}: {kinds.get_kind(name).summary(bundle.config)}"
            except BundleError:
                about = f"kind {name!r}, which this GeoWeb cannot load"
            flags = " UNTRAINED" if bundle.untrained else ""
            self.stdout.write(f"{'*' if bundle.active else ' '} {bundle.name}  {about}{flags}")
        active = registry.active_bundle_name()
        if active and registry.active_bundle_path() is None:
            self.stdout.write(self.style.WARNING(f"the active model {active!r} is not installed"))
        elif not active:
            self.stdout.write("no active model (use --activate NAME)")

"""Install a model bundle (directory, archive or URL) into MODEL_DIR and, by default, make it the active model.

    manage.py install_model PATH_OR_URL [--name NAME] [--no-activate] [--replace]
"""
from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from predictor import registry
from predictor.ml.bundle import BundleError


class Command(BaseCommand):
    help = "Check and install a model bundle; a bad bundle is refused and the active model stays as it was."

    def add_arguments(self, parser):
        parser.add_argument("source", help="bundle directory, .tar/.tar.gz/.zip archive, or http(s) URL of one")
        parser.add_argument("--name", help="install under this name instead of the bundle's own")
        parser.add_argument("--no-activate", action="store_true", help="install without making it active")
        parser.add_argument("--replace", action="store_true", help="replace an installed bundle of the same name")

    def handle(self, *args, source, name, no_activate, replace, **options):
        try:
            if "://" in source:  # a URL: only http(s) is downloaded, anything else is refused
                with registry.make_scratch_dir() as scratch:
                    self.stdout.write(f"downloading {source} ...")
                    archive = registry.download_bundle_archive(source, into=scratch)
                    installed = registry.install_bundle(archive, name=name, activate=not no_activate,
                                                        replace=replace)
            else:
                installed = registry.install_bundle(source, name=name, activate=not no_activate, replace=replace)
        except BundleError as error:
            raise CommandError(f"bundle refused: {error}") from None
        state = "active" if installed.active else "installed, not active"
        self.stdout.write(self.style.SUCCESS(f"installed {installed.name} at {installed.path} ({state})"))
        if installed.untrained:
            self.stdout.write(self.style.WARNING(f"{installed.name} is UNTRAINED: its predictions are meaningless"))
        active = registry.active_bundle_name()
        if not no_activate and active != installed.name:
            self.stdout.write(self.style.WARNING(
                f"settings.ACTIVE_MODEL (GEOWEB_MODEL) selects {active!r}, which takes precedence"))

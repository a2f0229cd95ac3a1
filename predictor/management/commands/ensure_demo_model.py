"""Make sure a model is active so the app can run: if none is installed, build and install the tiny untrained one.

    manage.py ensure_demo_model
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from predictor import registry
from predictor.ml.bundle import BundleError
from predictor.ml.isn import make_tiny_bundle

DEMO_NAME = "tiny-untrained"


class Command(BaseCommand):
    help = "Install and activate the tiny untrained demo bundle when no model bundle is installed."

    def handle(self, *args, **options):
        active = registry.active_bundle_path()
        if active is not None:
            bundle = next((b for b in registry.installed_bundles() if b.path == active), None)
            note = " (UNTRAINED: predictions are meaningless)" if bundle and bundle.untrained else ""
            self.stdout.write(f"active model: {active.name}{note}")
            return
        installed = registry.installed_bundles()
        if installed:
            if len(installed) == 1:
                registry.set_active(installed[0].name)
                self.stdout.write(f"activated the only installed model: {installed[0].name}")
                return
            names = ", ".join(b.name for b in installed)
            raise CommandError(f"several models are installed ({names}) and none is active: "
                               "choose one with `manage.py models --activate NAME`")
        try:
            with tempfile.TemporaryDirectory() as scratch:
                built = make_tiny_bundle(Path(scratch) / DEMO_NAME, name=DEMO_NAME)
                registry.install_bundle(built, activate=True)
        except BundleError as error:
            raise CommandError(f"could not install the demo model: {error}") from None
        self.stdout.write(self.style.WARNING(
            f"installed and activated {DEMO_NAME}: an UNTRAINED model with random weights. Its guesses are "
            "meaningless; install a trained bundle with `manage.py install_model PATH_OR_URL`."))

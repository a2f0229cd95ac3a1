"""Write a "vit" bundle from a multi-task ViT training checkpoint (train --backbone vit_b_16 ...).

    manage.py export_vit --checkpoint runs/vit/best.pt --name vit-b16-seg --output bundles/vit-b16-seg \
        [--segmentation deeplabv3_resnet50_coco-cd0a2569.pth] [--install]

A network trained with --segmentation needs the segmentation network its shards were made with; it ships in the
bundle and runs on every upload.
"""
from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from predictor.ml.segmentation import SEGMENTATION_ARCHS


class Command(BaseCommand):
    help = "Bundle a multi-task ViT checkpoint (and its segmentation network) as a vit bundle."

    def add_arguments(self, parser):
        parser.add_argument("--checkpoint", required=True, help="training checkpoint (best.pt / last.pt)")
        parser.add_argument("--name", required=True, help="bundle name (letters, digits, . _ -)")
        parser.add_argument("--output", help="bundle folder to write (default: a folder named NAME here)")
        parser.add_argument("--segmentation", metavar="WEIGHTS",
                            help="the segmentation network's weights (RGB + segmentation networks)")
        parser.add_argument("--segmentation-arch", choices=SEGMENTATION_ARCHS,
                            help="its architecture (default: what the training shards record)")
        parser.add_argument("--training-data", default="", help="one line describing the training data")
        parser.add_argument("--notes", default="")
        parser.add_argument("--install", action="store_true", help="install (and activate) the bundle afterwards")
        parser.add_argument("--overwrite", action="store_true")

    def handle(self, *args, **options):
        from predictor.ml.bundle import BundleError
        from predictor.ml.train.vit_export import export_vit_bundle

        try:
            path = export_vit_bundle(Path(options["output"] or options["name"]), checkpoint=options["checkpoint"],
                                     name=options["name"], segmentation=options["segmentation"],
                                     segmentation_arch=options["segmentation_arch"],
                                     training_data=options["training_data"] or "not stated", notes=options["notes"],
                                     overwrite=options["overwrite"])
        except (OSError, ValueError, BundleError) as error:
            raise CommandError(str(error)) from None
        self.stdout.write(f"bundle written: {path}")
        if options["install"]:
            from predictor import registry
            installed = registry.install_bundle(path, activate=True, replace=options["overwrite"])
            self.stdout.write(f"installed and activated: {installed.name}")

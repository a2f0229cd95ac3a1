"""Convert a public CSAILVision Places365 checkpoint (`<arch>_places365.pth.tar`) to safetensors, once, offline.

    manage.py convert_places365 resnet50_places365.pth.tar scene.safetensors [--backbone resnet50]

The result loads into `GeoNetwork(backbone, [365])` and can be given to `export_bundle --scene-weights`.
"""
from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from predictor.ml.network import convert_places365_checkpoint


class Command(BaseCommand):
    help = "Convert a Places365 .pth.tar (read with weights_only=True) to a safetensors scene classifier."

    def add_arguments(self, parser):
        parser.add_argument("source", type=Path)
        parser.add_argument("destination", type=Path)
        parser.add_argument("--backbone", default="resnet50", choices=["resnet18", "resnet50", "resnet101",
                                                                       "resnet152"])

    def handle(self, *args, source, destination, backbone, **options):
        if not source.is_file():
            raise CommandError(f"{source}: no such file")
        try:
            path = convert_places365_checkpoint(source, destination, backbone=backbone)
        except Exception as error:  # weights_only refusals, wrong architecture, bad file: all reported plainly
            raise CommandError(f"{source}: cannot convert ({error})") from None
        self.stdout.write(self.style.SUCCESS(f"wrote {path}"))

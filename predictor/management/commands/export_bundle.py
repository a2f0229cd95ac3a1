"""Write a servable bundle from training checkpoints, with measured accuracy in its model card.

    manage.py export_bundle --checkpoint runs/base-M/best.pt --name base-M-r50 --output bundles/base-M-r50 \
        --scene-model tiny-untrained|BUNDLE_PATH [--test im2gps META.csv IMAGES_DIR] [--install]
    manage.py export_bundle --isn indoor=runs/indoor/best.pt natural=... urban=... --name isn-M ...
"""
from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from predictor.ml.train.export import export_bundle, networks_from_checkpoints, scene_parts, validation_sections


def add_scene_arguments(parser) -> None:
    scene = parser.add_mutually_exclusive_group(required=True)
    scene.add_argument("--scene-model", help="installed bundle name or bundle path to copy the scene classifier from")
    scene.add_argument("--scene-weights", help="Places365 GeoNetwork weights (safetensors, e.g. from "
                                               "convert_places365_checkpoint)")
    scene.add_argument("--random-scene", action="store_true",
                       help="a random tiny scene classifier (scene labels meaningless; noted in the card)")
    parser.add_argument("--scene-backbone", default="resnet50", help="with --scene-weights")


def resolve_scene(options) -> tuple:
    from predictor import registry

    bundle = None
    if options["scene_model"]:
        bundle = Path(options["scene_model"])
        if not bundle.exists():
            bundle = registry.model_dir() / options["scene_model"]
        if not bundle.exists():
            raise CommandError(f"no such bundle: {options['scene_model']}")
    return scene_parts(scene_bundle=bundle, scene_weights=options["scene_weights"],
                       scene_backbone=options["scene_backbone"], random_scene=options["random_scene"])


def add_output_arguments(parser) -> None:
    parser.add_argument("--name", required=True, help="bundle name (letters, digits, . _ -)")
    parser.add_argument("--output", help="bundle folder to write (default: a folder named NAME here)")
    parser.add_argument("--test", nargs=3, action="append", default=[], metavar=("NAME", "META_CSV", "IMAGES"),
                        help="measure accuracy on a test set (e.g. im2gps im2gps_places365.csv images/)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--training-data", default="", help="one line describing the training data")
    parser.add_argument("--notes", default="")
    parser.add_argument("--install", action="store_true", help="install (and activate) the bundle afterwards")
    parser.add_argument("--overwrite", action="store_true")


def finish(command, path: Path, report: dict, options) -> None:
    command.stdout.write(f"bundle written: {path}")
    for dataset, values in report["accuracy"].items():
        shown = ", ".join(f"{k} km {100 * v:.1f}%" for k, v in values.items()) if isinstance(values, dict) else values
        command.stdout.write(f"  {dataset}: {shown}")
    if options["install"]:
        from predictor import registry
        installed = registry.install_bundle(path, activate=True, replace=options["overwrite"])
        command.stdout.write(f"installed and activated: {installed.name}")


class Command(BaseCommand):
    help = "Bundle trained checkpoints (base or three ISNs) with partitionings, scene classifier and a model card."

    def add_arguments(self, parser):
        weights = parser.add_mutually_exclusive_group(required=True)
        weights.add_argument("--checkpoint", help="training checkpoint of a base(M) network (best.pt / last.pt)")
        weights.add_argument("--isn", nargs=3, metavar="CONCEPT=CHECKPOINT",
                             help="indoor=PATH natural=PATH urban=PATH")
        add_scene_arguments(parser)
        add_output_arguments(parser)

    def handle(self, *args, **options):
        from predictor.ml.bundle import BundleError

        if options["checkpoint"]:
            checkpoints = {"base": options["checkpoint"]}
        else:
            checkpoints = dict(item.split("=", 1) for item in options["isn"] if "=" in item)
        try:
            networks, partitionings, histories = networks_from_checkpoints(checkpoints)
            scene_network, mapping, scene_note = resolve_scene(options)
            validation = validation_sections(histories)
            notes = " ".join(filter(None, [options["notes"], scene_note + "."]))
            output = Path(options["output"] or options["name"])
            path, report = export_bundle(
                output, name=options["name"], networks=networks, partitionings=partitionings,
                scene_network=scene_network, scene_mapping=mapping,
                training_data=options["training_data"] or "not stated", validation=validation or None,
                notes=notes, test_sets=[(n, Path(m), Path(i)) for n, m, i in options["test"]],
                device=options["device"], overwrite=options["overwrite"])
        except (OSError, ValueError, BundleError) as error:
            raise CommandError(str(error)) from None
        finish(self, path, report, options)

"""Write a servable bundle from training checkpoints, with measured accuracy in its model card.

    manage.py export_bundle --checkpoint runs/base-M/best.pt --name base-M-r50 --output bundles/base-M-r50 \
        --scene-model tiny-untrained|BUNDLE_PATH [--test im2gps META.csv IMAGES_DIR] [--install]
    manage.py export_bundle --isn runs/indoor/best.pt runs/natural/best.pt runs/urban/best.pt --name isn-M ...

Each ISN's concept is read from its checkpoint (`train --concept`). Every --test set is first compared with the
shards the networks learned from; test photos that are training photos stop the export unless --allow-overlap.
"""
from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from predictor.management.devices import add_device_argument, chosen_device
from predictor.ml.train.card import training_record
from predictor.ml.train.export import (export_bundle, load_checkpoints, networks_from_states, samples_of_folders,
                                       scene_source, training_folders, validation_sections)


def add_scene_arguments(parser) -> None:
    scene = parser.add_mutually_exclusive_group(required=True)
    scene.add_argument("--scene-model", help="installed bundle name or bundle path to copy the scene classifier from")
    scene.add_argument("--scene-weights", help="Places365 GeoNetwork weights (safetensors, e.g. from "
                                               "convert_places365_checkpoint)")
    scene.add_argument("--random-scene", action="store_true",
                       help="a random tiny scene classifier (scene labels meaningless; noted in the card)")
    parser.add_argument("--scene-backbone", default="resnet50", help="with --scene-weights")


def resolve_scene(options):
    """The scene classifier the options name (predictor.ml.train.export.SceneSource)."""
    from predictor import registry

    bundle = None
    if options["scene_model"]:
        bundle = Path(options["scene_model"])
        if not bundle.exists():
            bundle = registry.model_dir() / options["scene_model"]
        if not bundle.exists():
            raise CommandError(f"no such bundle: {options['scene_model']}")
    return scene_source(scene_bundle=bundle, scene_weights=options["scene_weights"],
                        scene_backbone=options["scene_backbone"], random_scene=options["random_scene"])


def add_output_arguments(parser) -> None:
    parser.add_argument("--name", required=True, help="bundle name (letters, digits, . _ -)")
    parser.add_argument("--output", help="bundle folder to write (default: a folder named NAME here)")
    parser.add_argument("--test", nargs=3, action="append", default=[], metavar=("NAME", "META_CSV", "IMAGES"),
                        help="measure accuracy on a test set (e.g. im2gps im2gps_places365.csv images/)")
    parser.add_argument("--train-shards", nargs="+", metavar="DIR",
                        help="shard folders the networks learned from, to check --test sets against (default: "
                             "the folders the checkpoints record)")
    parser.add_argument("--allow-overlap", action="store_true",
                        help="measure a test set even if it holds training photos (the count goes on the card)")
    add_device_argument(parser)
    parser.add_argument("--training-data", default="", help="one line describing the training data")
    parser.add_argument("--notes", default="")
    parser.add_argument("--install", action="store_true", help="install (and activate) the bundle afterwards")
    parser.add_argument("--overwrite", action="store_true")


def finish(command, path: Path, report: dict, options) -> None:
    command.stdout.write(f"bundle written: {path}")
    for dataset, values in report["accuracy"].items():
        shown = ", ".join(f"{k} km {100 * v:.1f}%" for k, v in values.items()) if isinstance(values, dict) else values
        command.stdout.write(f"  {dataset}: {shown}")
    for name, test in report.get("test_sets", {}).items():
        if test["overlap"] is not None:
            overlap = test["overlap"]
            command.stdout.write(f"  {name}: {overlap['overlapping']} of {overlap['evaluated']} photos are training "
                                 f"photos ({overlap['shared_ids']} by id, {overlap['shared_author_coordinate']} by "
                                 f"author and coordinate)" + (" - allowed by --allow-overlap, written on the card"
                                                             if test["allowed_overlap"] else ""))
        else:
            command.stderr.write(f"warning: {name}: overlap with the training data not checked: "
                                 f"{test['overlap_note']}")
        spread = test.get("spread")
        if spread:
            command.stdout.write(f"  {name}: {spread['distinct_cells']} distinct predicted cells for "
                                 f"{spread['images']} photos" + (f", calibration error {spread['ece']:.3f}"
                                                                 if spread["ece"] is not None else ""))
    for title, lines in report.get("sections", []):
        for line in lines:
            if "WARNING" in line:
                command.stderr.write(f"warning ({title.lower()}, on the card): "
                                     f"{line.strip('- ').replace('WARNING: ', '')}")
    if options["install"]:
        from predictor import registry
        installed = registry.install_bundle(path, activate=True, replace=options["overwrite"])
        command.stdout.write(f"installed and activated: {installed.name}")


def training_check(training: dict | None, options) -> tuple:
    """(function streaming the training samples or None, note when unchecked) for the --test overlap check."""
    folders = options["train_shards"] or (training_folders(training) if training else [])
    if not options["test"]:
        return None, ""
    if not folders:
        return None, "the training images are not known"
    missing = [f for f in folders if not Path(f, "index.json").is_file()]
    if missing and not options["allow_overlap"]:
        raise CommandError(f"the networks were trained on {', '.join(missing)}, which is not here, so the test sets "
                           "cannot be compared with the training photos. Give --train-shards DIR (where those shards "
                           "are now), or --allow-overlap to measure without the check.")
    if missing:
        return None, f"the training shards ({', '.join(missing)}) are not here"
    return samples_of_folders(folders), ""


class Command(BaseCommand):
    help = "Bundle trained checkpoints (base or three ISNs) with partitionings, scene classifier and a model card."

    def add_arguments(self, parser):
        weights = parser.add_mutually_exclusive_group(required=True)
        weights.add_argument("--checkpoint", help="training checkpoint of a base(M) network (best.pt / last.pt)")
        weights.add_argument("--isn", nargs=3, metavar="[CONCEPT=]CHECKPOINT",
                             help="the three ISN checkpoints (train --concept); each one's concept is read from it")
        add_scene_arguments(parser)
        add_output_arguments(parser)

    def handle(self, *args, **options):
        from predictor.ml.bundle import BundleError

        device = chosen_device(options)
        try:
            states = load_checkpoints(base=options["checkpoint"], isn=options["isn"] or ())
            networks, partitionings, histories = networks_from_states(states)
            training = training_record(states)
            training_samples, unchecked = training_check(training, options)
            scene = resolve_scene(options)
            validation = validation_sections(
                histories, crop_sizes={c: n["crop_size"] for c, n in training["networks"].items()},
                validations={c: n["validation"] for c, n in training["networks"].items()})
            notes = " ".join(filter(None, [options["notes"], scene.note + "."]))
            output = Path(options["output"] or options["name"])
            path, report = export_bundle(
                output, name=options["name"], networks=networks, partitionings=partitionings,
                scene_network=scene.network, scene_mapping=scene.mapping,
                training_data=options["training_data"] or "not stated", validation=validation or None,
                notes=notes, test_sets=[(n, Path(m), Path(i)) for n, m, i in options["test"]],
                device=device, overwrite=options["overwrite"], training=training, histories=histories,
                scene_note=scene.note, scene_untrained=scene.untrained, training_samples=training_samples,
                unchecked_note=unchecked, allow_overlap=options["allow_overlap"],
                progress=options["verbosity"] > 0)
        except (OSError, ValueError, BundleError) as error:
            raise CommandError(str(error)) from None
        finish(self, path, report, options)

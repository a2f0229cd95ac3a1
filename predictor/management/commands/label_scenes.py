"""Label training images with S3 scene probabilities and optionally split them into the three ISN subsets.

    manage.py label_scenes --shards shards/mp16/train --model NAME_OR_BUNDLE --output scenes.csv \
        [--subsets-dir shards/mp16-isn] [--min-probability 0.0]
"""
from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from predictor.management.devices import add_device_argument, chosen_device
from predictor.ml.prediction import S3_CONCEPTS
from predictor.ml.train.scene_labels import label_scenes, shard_photos, subset_ids, write_subset_shards


class Command(BaseCommand):
    help = "Places365 -> S3 probabilities per training image (CSV); --subsets-dir writes one shard folder per concept."

    def add_arguments(self, parser):
        parser.add_argument("--shards", required=True, help="shard folder written by preprocess_images")
        parser.add_argument("--model", help="installed bundle name or bundle path whose scene classifier to run "
                                            "(default: the active model)")
        parser.add_argument("--output", required=True, help="CSV to write")
        add_device_argument(parser)
        parser.add_argument("--batch-size", type=int, default=64)
        parser.add_argument("--subsets-dir", help="write SUBSETS_DIR/{indoor,natural,urban} shard folders")
        parser.add_argument("--min-probability", type=float, default=0.0,
                            help="keep an image for its argmax concept only if that probability is at least this")

    def handle(self, *args, **options):
        from predictor import registry
        from predictor.ml.bundle import BundleError
        from predictor.ml.kinds import load_bundle
        from predictor.ml.model import PlacesSceneClassifier, offers

        target = options["model"]
        if target and Path(target).exists():
            path = Path(target)
        elif target:
            path = registry.model_dir() / target
        else:
            path = registry.active_bundle_path()
        if path is None or not path.exists():
            raise CommandError(f"no such model: {target or '(no active model)'}")
        device = chosen_device(options)
        try:
            model = load_bundle(path, device=device)
        except BundleError as error:
            raise CommandError(str(error)) from None
        if not offers(model, PlacesSceneClassifier):
            raise CommandError(f"{model.name} (kind {model.kind}) has no Places365 scene classifier to label with")
        if model.scene_untrained:
            self.stderr.write(f"warning: the scene classifier of {model.name} is untrained: its scene labels are "
                              "meaningless")
        try:
            count = label_scenes(shard_photos(options["shards"]), scene_model=model.scene,
                                 mapping=model.scene_mapping, output=options["output"],
                                 batch_size=options["batch_size"], device=device,
                                 size=model.crops.scene_size, progress=options["verbosity"] > 0)
        except (OSError, ValueError) as error:
            raise CommandError(str(error)) from None
        self.stdout.write(f"{count} images labelled -> {options['output']}")
        if options["subsets_dir"]:
            for concept in S3_CONCEPTS:
                keep = subset_ids(options["output"], concept=concept, min_probability=options["min_probability"])
                written = write_subset_shards(options["shards"], Path(options["subsets_dir"]) / concept,
                                              keep_ids=keep)
                self.stdout.write(f"{concept}: {written} images -> {Path(options['subsets_dir']) / concept}")

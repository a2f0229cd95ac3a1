"""Build the background collection of an swc bundle (Search within Cell) from training shards.

    manage.py build_background --model NAME_OR_BUNDLE --shards shards/mp16/train --output bundles/swc-bg \
        [--name NAME] [--batch-size 64] [--device auto] [--overwrite] [--install] \
        [--top-k 10] [--eps-km 1] [--top-cells 1] [--conf-thres 0.2] [--conf-scale-km 25]

Writes a new bundle: the input's files plus background/ (float16 embeddings, coordinates, fine-cell offsets; about
520 MB per million photos at 256-d). Stopped runs resume from OUTPUT.work/.
"""
from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from predictor.management.devices import add_device_argument, chosen_device


class Command(BaseCommand):
    help = "Embed training shards with an swc bundle's retrieval head: a new bundle with its background collection."

    def add_arguments(self, parser):
        parser.add_argument("--model", required=True, help="installed bundle name or bundle path (kind swc)")
        parser.add_argument("--shards", required=True, help="shard folder written by preprocess_images")
        parser.add_argument("--output", required=True, help="the new bundle's folder")
        parser.add_argument("--name", help="the new bundle's name (default: <model>-background)")
        parser.add_argument("--batch-size", type=int, default=64)
        parser.add_argument("--workers", type=int, default=0, help="DataLoader workers")
        parser.add_argument("--overwrite", action="store_true")
        parser.add_argument("--install", action="store_true", help="install the new bundle (and make it active)")
        parser.add_argument("--top-k", type=int, help="background photos retrieved in the cell (default 10)")
        parser.add_argument("--eps-km", type=float, help="DBSCAN radius in km (default 1)")
        parser.add_argument("--top-cells", type=int, help="search the union of this many top cells (default 1)")
        parser.add_argument("--conf-thres", type=float,
                            help="prediction density above which a photo is localizable (default 0.2)")
        parser.add_argument("--conf-scale-km", type=float, help="radius of the prediction density (default 25)")
        add_device_argument(parser)

    def handle(self, *args, **options):
        from predictor import registry
        from predictor.ml.background import build_background
        from predictor.ml.bundle import BundleError

        target = options["model"]
        path = Path(target) if Path(target).exists() else registry.model_dir() / target
        if not path.exists():
            raise CommandError(f"no such model: {target}")
        try:
            result = build_background(path, options["shards"], options["output"], name=options["name"],
                                      batch_size=options["batch_size"], device=chosen_device(options),
                                      workers=options["workers"], progress=options["verbosity"] > 0,
                                      overwrite=options["overwrite"],
                                      search={key: options[key] for key in ("top_k", "eps_km", "top_cells",
                                                                            "conf_thres", "conf_scale_km")
                                              if options.get(key) is not None})
        except (BundleError, OSError, ValueError) as error:
            raise CommandError(str(error)) from None
        if result["resumed_from"]:
            self.stdout.write(f"resumed after {result['resumed_from']} photos embedded by an earlier run")
        self.stdout.write(f"{result['images']} background photos in {result['cells_with_images']} cells, "
                          f"{result['bytes'] / 1e6:.1f} MB ({result['bytes_per_million'] / 1e6:.0f} MB per million "
                          f"photos) -> {result['bundle']}")
        if options["install"]:
            try:
                installed = registry.install_bundle(result["bundle"], replace=True)
            except BundleError as error:
                raise CommandError(str(error)) from None
            self.stdout.write(f"installed {installed}")

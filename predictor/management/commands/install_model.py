"""Install a model bundle (directory, archive or URL) into MODEL_DIR and, by default, make it the active model.

    manage.py install_model PATH_OR_URL [--name NAME] [--no-activate] [--replace]
    manage.py install_model geoclip --partitionings COARSE.csv MIDDLE.csv FINE.csv --scene-model BUNDLE \
        [--from CLIP_DIR] [--wheel geoclip-1.3.0-py3-none-any.whl]

`geoclip` builds a GeoCLIP bundle (docs/geoclip.md): the geoclip wheel's weights and gallery (downloaded with
`pip download --no-deps` when --wheel is not given) and CLIP ViT-L/14's vision tower from --from, a local copy of
openai/clip-vit-large-patch14, or downloaded from the Hugging Face hub. Only this command ever downloads.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from predictor import registry
from predictor.ml.bundle import BundleError

GEOCLIP = "geoclip"


class Command(BaseCommand):
    help = "Check and install a model bundle; a bad bundle is refused and the active model stays as it was."

    def add_arguments(self, parser):
        parser.add_argument("source", help="bundle directory, .tar/.tar.gz/.zip archive, http(s) URL of one, "
                                           "or 'geoclip' to build the GeoCLIP bundle")
        parser.add_argument("--name", help="install under this name instead of the bundle's own")
        parser.add_argument("--no-activate", action="store_true", help="install without making it active")
        parser.add_argument("--replace", action="store_true", help="replace an installed bundle of the same name")
        geoclip = parser.add_argument_group("geoclip")
        geoclip.add_argument("--from", dest="clip_dir", type=Path,
                             help="local copy of openai/clip-vit-large-patch14 (config.json, model.safetensors)")
        geoclip.add_argument("--wheel", type=Path, help="geoclip-1.3.0-py3-none-any.whl (default: pip download)")
        geoclip.add_argument("--partitionings", nargs=3, type=Path, metavar=("COARSE", "MIDDLE", "FINE"),
                             help="the paper's cells_50_5000.csv cells_50_2000.csv cells_50_1000.csv")
        scene = geoclip.add_mutually_exclusive_group()
        scene.add_argument("--scene-model", help="installed bundle name or path to copy the Places365 classifier from")
        scene.add_argument("--random-scene", action="store_true",
                           help="a random tiny scene classifier (scene labels meaningless; noted in the card)")

    def handle(self, *args, source, name, no_activate, replace, **options):
        try:
            if source == GEOCLIP:
                with registry.make_scratch_dir() as scratch:
                    bundle = self._build_geoclip(Path(scratch), name or GEOCLIP, options)
                    installed = registry.install_bundle(bundle, activate=not no_activate, replace=replace)
            elif "://" in source:  # a URL: only http(s) is downloaded, anything else is refused
                with registry.make_scratch_dir() as scratch:
                    self.stdout.write(f"downloading {source} ...")
                    archive = registry.download_bundle_archive(source, into=scratch)
                    installed = registry.install_bundle(archive, name=name, activate=not no_activate,
                                                        replace=replace)
            else:
                installed = registry.install_bundle(source, name=name, activate=not no_activate, replace=replace)
        except (BundleError, ValueError) as error:  # GeoCLIPError is a ValueError
            raise CommandError(f"bundle refused: {error}") from None
        state = "active" if installed.active else "installed, not active"
        self.stdout.write(self.style.SUCCESS(f"installed {installed.name} at {installed.path} ({state})"))
        if installed.untrained:
            self.stdout.write(self.style.WARNING(f"{installed.name} is UNTRAINED: its predictions are meaningless"))
        active = registry.active_bundle_name()
        if not no_activate and active != installed.name:
            self.stdout.write(self.style.WARNING(
                f"settings.ACTIVE_MODEL (GEOWEB_MODEL) selects {active!r}, which takes precedence"))

    def _build_geoclip(self, scratch: Path, name: str, options) -> Path:
        from predictor.ml import geoclip
        from predictor.ml.partitions import HIERARCHY_NAMES, Partitioning
        from predictor.ml.train.export import scene_source

        if not options["partitionings"]:
            raise CommandError("geoclip needs --partitionings COARSE MIDDLE FINE (the paper's cells_50_5000.csv "
                               "cells_50_2000.csv cells_50_1000.csv)")
        if not (options["scene_model"] or options["random_scene"]):
            raise CommandError("geoclip needs a scene classifier: --scene-model BUNDLE (or --random-scene)")
        for path in options["partitionings"]:
            if not path.is_file():
                raise CommandError(f"{path}: no such partitioning file")
        partitionings = [Partitioning.from_csv(p, name=n)
                         for p, n in zip(options["partitionings"], HIERARCHY_NAMES)]
        scene_bundle = None
        if options["scene_model"]:
            scene_bundle = Path(options["scene_model"])
            if not scene_bundle.exists():
                scene_bundle = registry.model_dir() / options["scene_model"]
            if not scene_bundle.exists():
                raise CommandError(f"no such bundle: {options['scene_model']}")
        scene = scene_source(scene_bundle=scene_bundle, random_scene=options["random_scene"])
        wheel = options["wheel"]
        if wheel is None:
            self.stdout.write("downloading the geoclip 1.3.0 wheel (weights and gallery; not installed) ...")
            result = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--dest",
                                     str(scratch / "wheel"), "geoclip==1.3.0"], capture_output=True, text=True)
            if result.returncode != 0:
                raise CommandError(f"pip download geoclip==1.3.0 failed: {result.stderr.strip()[-500:]}")
            wheel = scratch / "wheel" / geoclip.WHEEL_NAME
        clip_dir, clip_source = options["clip_dir"], geoclip.CLIP_REPO
        if clip_dir is None:
            self.stdout.write(f"downloading {geoclip.CLIP_REPO} from the Hugging Face hub (about 1.7 GB) ...")
            clip_dir = geoclip.download_clip(scratch / "clip")
        else:
            clip_source = f"{geoclip.CLIP_REPO} (local copy {clip_dir})"
        self.stdout.write("building the GeoCLIP bundle (assigning 100k gallery points to cells) ...")
        return geoclip.build_geoclip_bundle(scratch / name, wheel=wheel, clip_dir=clip_dir, clip_source=clip_source,
                                            partitionings=partitionings, scene_network=scene.network,
                                            scene_mapping=scene.mapping, scene_note=scene.note + ".",
                                            scene_untrained=scene.untrained, name=name)

"""Import TIB's PyTorch base(M, f*) release (`epoch=014-val_loss=18.4833.ckpt` + `hparams.yaml`) as a bundle.

    manage.py import_checkpoint --checkpoint epoch=014-val_loss=18.4833.ckpt --hparams hparams.yaml \
        --partitionings cells_50_5000.csv cells_50_2000.csv cells_50_1000.csv --name tib-base-M \
        --scene-model BUNDLE [--test im2gps META.csv IMAGES] [--install]
"""
from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from predictor.management.commands.export_bundle import (add_output_arguments, add_scene_arguments, finish,
                                                         resolve_scene)
from predictor.management.devices import chosen_device
from predictor.ml.train.export import export_bundle, samples_of_folders
from predictor.ml.train.lightning_import import load_lightning_checkpoint
from predictor.ml.train.loop import load_partitionings


class Command(BaseCommand):
    help = "Convert a PyTorch Lightning base(M) checkpoint (TIB format) into a GeoWeb bundle (safetensors)."

    def add_arguments(self, parser):
        parser.add_argument("--checkpoint", required=True, help="the Lightning .ckpt file")
        parser.add_argument("--hparams", help="its hparams.yaml (architecture, partitioning file names)")
        parser.add_argument("--partitionings", nargs="+", required=True,
                            help="the cell CSVs the checkpoint was trained on, coarse -> fine")
        parser.add_argument("--backbone", help="override the architecture (default: from hparams or the weights)")
        add_scene_arguments(parser)
        add_output_arguments(parser)

    def handle(self, *args, **options):
        from predictor.ml.bundle import BundleError

        try:
            network, facts = load_lightning_checkpoint(options["checkpoint"], hparams_path=options["hparams"],
                                                       backbone=options["backbone"])
            partitionings = load_partitionings(options["partitionings"])
            sizes = [len(p) for p in partitionings]
            if sizes != facts["num_classes"]:
                raise CommandError(f"the checkpoint's heads have {facts['num_classes']} classes but the "
                                   f"partitionings have {sizes} cells")
            scene = resolve_scene(options)
            notes = (f"Imported from {Path(options['checkpoint']).name} (Lightning {facts['lightning_version']}, "
                     f"epoch index {facts['epoch']}, step {facts['global_step']}). {scene.note}. {options['notes']}")
            output = Path(options["output"] or options["name"])
            folders = options["train_shards"]
            for folder in folders or []:
                if not Path(folder, "index.json").is_file():
                    raise CommandError(f"--train-shards {folder}: not a shard folder (no index.json)")
            path, report = export_bundle(
                output, name=options["name"], networks={"base": network}, partitionings=partitionings,
                scene_network=scene.network, scene_mapping=scene.mapping,
                training_data=options["training_data"] or "as stated by the checkpoint's authors (not re-measured)",
                notes=notes.strip(), test_sets=[(n, Path(m), Path(i)) for n, m, i in options["test"]],
                device=chosen_device(options), overwrite=options["overwrite"], scene_note=scene.note,
                scene_untrained=scene.untrained,
                training_samples=samples_of_folders(folders) if folders else None,
                unchecked_note="the checkpoint's training images are not here (give --train-shards if you hold "
                               "them)", allow_overlap=options["allow_overlap"], progress=options["verbosity"] > 0)
        except (OSError, ValueError, BundleError) as error:
            raise CommandError(str(error)) from None
        finish(self, path, report, options)

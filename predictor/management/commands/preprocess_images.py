"""Resize geotagged photos to a 320 px short side and write WebDataset-style tar shards with cell labels.

    manage.py preprocess_images --source csv --metadata mp16.csv --images DIR_OR_TARS --output shards/mp16 \
        --partitionings cells_coarse.csv cells_middle.csv cells_fine.csv [--val-fraction 0.01 --val-split-by author]
    manage.py preprocess_images --source csv --metadata yfcc25600_places365.csv --images yfcc25600/images \
        --output shards/yfcc25600 --partitionings ... --validation-set      # everything into OUTPUT/val
    manage.py preprocess_images --source osv5m --root osv5m/ --split train --output shards/osv5m ...
    manage.py preprocess_images --source exif --images ~/Pictures --output shards/mine ...
    manage.py preprocess_images ... --segmentation deeplabv3_resnet50_coco-cd0a2569.pth   # + segmentation maps
"""
from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from predictor.ml.segmentation import SEG_CHANNELS, SEGMENTATION_ARCHS, VOC_CLASSES, PhotoSegmenter, load_segmenter
from predictor.ml.train.datasets import open_source
from predictor.ml.train.holdout import DEFAULT_PLACE_LEVEL, SPLIT_KINDS, ValidationSplit
from predictor.ml.train.loop import load_partitionings
from predictor.ml.train.shards import JPEG_QUALITY, SAMPLES_PER_SHARD, SHORT_SIDE, preprocess_photos


class Command(BaseCommand):
    help = "Write training shards (JPEG, short side 320, tar) from a CSV+images, OSV-5M or EXIF-GPS photo folder."

    def add_arguments(self, parser):
        parser.add_argument("--source", choices=["csv", "osv5m", "exif"], required=True)
        parser.add_argument("--metadata", help="csv: CSV with id, lat, lon (osv5m: defaults to ROOT/SPLIT.csv)")
        parser.add_argument("--images", help="csv: image folder or folder of tar shards; exif: photo folder")
        parser.add_argument("--root", help="osv5m: dataset root holding SPLIT.csv and images/SPLIT/*.zip")
        parser.add_argument("--split", default="train", help="osv5m split")
        parser.add_argument("--output", required=True, help="writes OUTPUT/train (and OUTPUT/val)")
        parser.add_argument("--partitionings", nargs="*", default=[],
                            help="cell CSVs (coarse -> fine) to label with; images outside them are dropped")
        parser.add_argument("--val-fraction", type=float, default=0.0,
                            help="share held out for validation in OUTPUT/val (a stable hash decides)")
        parser.add_argument("--val-split-by", choices=SPLIT_KINDS,
                            help="hold out whole authors, S2 places or single images (default: author where the "
                                 "photo's author is known, else image)")
        parser.add_argument("--val-place-level", type=int, default=DEFAULT_PLACE_LEVEL,
                            help=f"S2 level of the places with --val-split-by place (default {DEFAULT_PLACE_LEVEL}, "
                                 "cells about 9 km across)")
        parser.add_argument("--validation-set", action="store_true",
                            help="a separate validation set (e.g. YFCC25600): write every photo to OUTPUT/val")
        parser.add_argument("--samples-per-shard", type=int, default=SAMPLES_PER_SHARD)
        parser.add_argument("--short-side", type=int, default=SHORT_SIDE)
        parser.add_argument("--quality", type=int, default=JPEG_QUALITY)
        parser.add_argument("--segmentation", metavar="WEIGHTS",
                            help="also store a colour-coded semantic segmentation map per photo, computed by the "
                                 "segmentation network in this local weights file (for the vit kind's second input)")
        parser.add_argument("--segmentation-arch", default="deeplabv3_resnet50", choices=SEGMENTATION_ARCHS,
                            help="architecture of --segmentation (default deeplabv3_resnet50)")
        parser.add_argument("--segmentation-classes", type=int, default=VOC_CLASSES,
                            help=f"classes of --segmentation (default {VOC_CLASSES}: torchvision's VOC labels)")
        parser.add_argument("--seg-channels", type=int, default=SEG_CHANNELS, choices=[SEG_CHANNELS],
                            help="channels of the stored map (a 3-channel colour code)")
        parser.add_argument("--device", default="cpu", help="device of the segmentation network (cpu, cuda)")

    def handle(self, *args, **options):
        kind = options["source"]
        try:
            if kind == "csv":
                if not (options["metadata"] and options["images"]):
                    raise CommandError("--source csv needs --metadata and --images")
                source = open_source("csv", metadata=options["metadata"], images=options["images"])
            elif kind == "osv5m":
                if not options["root"]:
                    raise CommandError("--source osv5m needs --root")
                source = open_source("osv5m", root=options["root"], split=options["split"],
                                     metadata=options["metadata"])
            else:
                if not options["images"]:
                    raise CommandError("--source exif needs --images (the photo folder)")
                source = open_source("exif", folder=options["images"])
            if options["validation_set"] and options["val_fraction"]:
                raise CommandError("--validation-set writes every photo to OUTPUT/val; it does not go with "
                                   "--val-fraction")
            if options["val_split_by"] and not options["val_fraction"]:
                raise CommandError("--val-split-by needs --val-fraction (the share to hold out)")
            split = ValidationSplit(options["val_split_by"] or "auto", options["val_fraction"],
                                    options["val_place_level"])
            partitionings = load_partitionings(options["partitionings"]) if options["partitionings"] else []
            segmenter = None
            if options["segmentation"]:
                segmenter = PhotoSegmenter(load_segmenter(options["segmentation"], arch=options["segmentation_arch"],
                                                          num_classes=options["segmentation_classes"]),
                                           device=options["device"])
            reports, split_report = preprocess_photos(
                source, options["output"], partitionings=partitionings, split=split,
                all_to="val" if options["validation_set"] else None, samples_per_shard=options["samples_per_shard"],
                short_side=options["short_side"], quality=options["quality"], source_report=source.report,
                progress=options["verbosity"] > 0, segmenter=segmenter)
        except (OSError, ValueError) as error:
            raise CommandError(str(error)) from None
        self.stdout.write(f"source: {source.report.summary()}")
        for example in source.report.examples[:5]:
            self.stdout.write(f"  skipped {example}")
        if split_report is not None:
            self.stdout.write(split_report.summary())
            if options["val_split_by"] == "author" and split_report.by_kind.get("image"):
                self.stderr.write(f"warning: {split_report.by_kind['image']} photos have no known author and were "
                                  "split by image id")
        for name, report in reports.items():
            self.stdout.write(report.summary(name))
        if not sum(report.written for report in reports.values()):
            raise CommandError("no photo was written: " + (
                "the source yielded no readable photo with coordinates" if not source.report.yielded else
                "every photo fell outside the partitionings' cells or was too small") + ". Nothing to train on.")
        if split_report is not None and not reports["val"].written:
            raise CommandError(f"the validation set is empty: --val-fraction {options['val_fraction']} held out no "
                               "photo. Raise it, or give a separate validation set.")

"""Build S2-cell partitionings (the classifier's classes) from a CSV of training-image coordinates.

    manage.py build_partitions --coords coords.csv --tau-min 50 --tau-max 1000 --out cells_50_1000.csv
    manage.py build_partitions --coords coords.csv --hierarchy --out-dir cells/   # coarse/middle/fine, taus scaled
    manage.py build_partitions --coords shards/mine/train --hierarchy --out-dir cells/   # from stored photos
"""
from __future__ import annotations

import time
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from predictor.ml.partitions import parent_matrix
from predictor.ml.train import cells


class Command(BaseCommand):
    help = "Adaptive S2 partitioning of image coordinates (Müller-Budack et al. 2018): one, or coarse/middle/fine."

    def add_arguments(self, parser):
        parser.add_argument("--coords", required=True, type=Path,
                            help="CSV with a header and lat/lon columns, or a shard folder (its photos' coordinates)")
        parser.add_argument("--lat-col", help="latitude column, any case (default: LAT, lat or latitude)")
        parser.add_argument("--lon-col", help="longitude column, any case (default: LON, lon, lng or longitude)")
        parser.add_argument("--tau-min", type=int, help="cells with at most this many images are dropped")
        parser.add_argument("--tau-max", type=int, nargs="+",
                            help="cells with more images are split; three values (coarse, middle, fine) with "
                                 "--hierarchy")
        parser.add_argument("--hierarchy", action="store_true",
                            help="build coarse, middle and fine; without taus, the paper's 50 and 5000/2000/1000 "
                                 "scaled by (number of images / 4,723,695)")
        parser.add_argument("--min-level", type=int, default=cells.MIN_LEVEL)
        parser.add_argument("--max-level", type=int, default=cells.MAX_LEVEL)
        parser.add_argument("--out", type=Path, help="output CSV (single partitioning)")
        parser.add_argument("--out-dir", type=Path, help="output folder (--hierarchy): cells_<tau_min>_<tau_max>.csv")
        parser.add_argument("--name", help="partitioning name (single partitioning; default: the output file name)")

    def handle(self, *args, **options):
        # Never write into whatever the current folder happens to be: the caller names where the cells go.
        if options["hierarchy"] and not options["out_dir"]:
            raise CommandError("say where to write the three partitionings: --out-dir DIR")
        if not options["hierarchy"] and not options["out"]:
            raise CommandError("say where to write the partitioning: --out FILE.csv (or --hierarchy --out-dir DIR)")
        skipped: list[str] = []
        try:
            lats, lons = cells.read_coordinates(options["coords"], lat_col=options["lat_col"],
                                                lon_col=options["lon_col"], skipped=skipped)
        except ValueError as error:
            raise CommandError(str(error)) from None
        self.stdout.write(f"{len(lats)} coordinates from {options['coords']}")
        if skipped:
            shown = "; ".join(skipped[:5]) + (f"; and {len(skipped) - 5} more" if len(skipped) > 5 else "")
            # Skipped and listed, not fatal: a few odd rows among millions should not stop a build.
            self.stdout.write(f"skipped {len(skipped)} bad rows: {shown}")
        if options["hierarchy"]:
            self._hierarchy(lats, lons, options)
        else:
            self._single(lats, lons, options)

    def _single(self, lats, lons, options):
        if options["tau_min"] is None or not options["tau_max"] or len(options["tau_max"]) != 1:
            raise CommandError("give --tau-min and one --tau-max (or --hierarchy for coarse/middle/fine)")
        tau_min, tau_max = options["tau_min"], options["tau_max"][0]
        out = options["out"]
        started = time.perf_counter()
        try:
            partitioning = cells.build_partitioning(lats, lons, tau_min=tau_min, tau_max=tau_max,
                                                    min_level=options["min_level"], max_level=options["max_level"],
                                                    name=options["name"] or out.stem)
        except ValueError as error:
            raise CommandError(str(error)) from None
        self._report(partitioning, tau_min, tau_max)
        self.stdout.write(f"built in {time.perf_counter() - started:.1f} s")
        out.parent.mkdir(parents=True, exist_ok=True)
        partitioning.to_csv(out)
        self.stdout.write(f"wrote {out}")

    def _hierarchy(self, lats, lons, options):
        if (options["tau_min"] is None) != (options["tau_max"] is None):
            raise CommandError("with --hierarchy give both --tau-min and three --tau-max, or neither")
        if options["tau_min"] is None:
            tau_min, tau_maxes = cells.paper_scaled_taus(len(lats))
            self.stdout.write(f"paper's taus scaled by {len(lats)}/{cells.PAPER_NUM_IMAGES}: tau_min {tau_min}, "
                              f"tau_max {'/'.join(map(str, tau_maxes))}")
        else:
            tau_min, tau_maxes = options["tau_min"], options["tau_max"]
        out_dir = options["out_dir"]
        started = time.perf_counter()
        try:
            partitionings = cells.build_hierarchy(lats, lons, tau_min=tau_min, tau_maxes=tau_maxes,
                                                  min_level=options["min_level"], max_level=options["max_level"])
            matrix = parent_matrix(partitionings)
        except ValueError as error:
            raise CommandError(str(error)) from None
        for partitioning, tau_max in zip(partitionings, tau_maxes):
            self._report(partitioning, tau_min, tau_max)
        self.stdout.write(f"built in {time.perf_counter() - started:.1f} s; nested: each of the "
                          f"{len(matrix)} fine cells has one parent per coarser partitioning")
        out_dir.mkdir(parents=True, exist_ok=True)
        for partitioning, tau_max in zip(partitionings, tau_maxes):
            path = out_dir / f"cells_{tau_min}_{tau_max}.csv"
            partitioning.to_csv(path)
            self.stdout.write(f"wrote {partitioning.name}: {path}")

    def _report(self, partitioning, tau_min, tau_max):
        s = cells.partitioning_summary(partitioning, tau_max=tau_max)
        self.stdout.write(
            f"{s['name']}: tau {tau_min}/{tau_max}: {s['cells']} cells, {s['images_kept']} of {s['images_in']} "
            f"images kept, images per cell {s['count_min']}/{s['count_median']:g}/{s['count_max']} "
            f"(min/median/max), S2 levels {s['level_min']}-{s['level_max']}")
        for token, count, level in s["over_tau_max"]:
            self.stdout.write(f"  unsplittable level-{level} cell {token}: {count} images > tau_max {tau_max}")

"""Evaluate geolocation results against a test set's meta file and print the accuracy table.

    manage.py evaluate --meta im2gps3k_places365.csv --predictions ISNs_M-fstar-S3.csv [--out DIR]
    manage.py evaluate --meta im2gps3k_places365.csv --images DIR --model NAME [--out DIR]

With --images, the test photos are first compared with the model's training data (image ids, and author +
coordinate); test photos that are training photos stop the evaluation unless --allow-overlap is given.
"""
from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from predictor.management.devices import add_device_argument, chosen_device
from predictor.ml import evaluation


class Command(BaseCommand):
    help = "Accuracy at 1/25/200/750/2500 km, mean and median error, per S3 scene; writes CSV, JSON and a plot."

    def add_arguments(self, parser):
        parser.add_argument("--meta", required=True, type=Path,
                            help="test-set meta CSV (IMG_ID, LAT, LON, S3_Label, ...)")
        source = parser.add_mutually_exclusive_group(required=True)
        source.add_argument("--predictions", type=Path, help="a results file in the paper's format")
        source.add_argument("--images", type=Path, help="folder of the test images, named by IMG_ID")
        parser.add_argument("--model", help="installed bundle name or bundle path (with --images; default: active)")
        add_device_argument(parser)
        parser.add_argument("--batch-size", type=int, default=32)
        parser.add_argument("--name", help="name of the report (default: the predictions file's or model's name)")
        parser.add_argument("--train-shards", nargs="+", type=Path, metavar="DIR",
                            help="shard folders the model learned from (default: those its bundle records)")
        parser.add_argument("--allow-overlap", action="store_true",
                            help="evaluate even when test photos are training photos (the count is reported)")
        parser.add_argument("--out", type=Path, help="folder for <name>_accuracy.{csv,json,png}")
        parser.add_argument("--selective", action="store_true",
                            help="with --images: accuracy of the localizable and non-localizable images and the "
                                 "accuracy-coverage curve (<name>_selective.{csv,png} in --out)")
        parser.add_argument("--conf-thres", type=float, default=0.2,
                            help="--selective, models without their own verdict: density above which an image is "
                                 "localizable (default 0.2)")
        parser.add_argument("--store", action="store_true",
                            help="with --images and an installed bundle: keep the figures with the bundle "
                                 "(<bundle>/evaluations/<meta file>.json), where /models/ shows them")

    def handle(self, *args, **options):
        self._selective = {} if options["selective"] else None
        if options["selective"] and options["images"] is None:
            raise CommandError("--selective needs --images (the model is run here for its confidence scores)")
        try:
            meta = evaluation.read_meta(options["meta"])
            if options["predictions"] is not None:
                if options["model"]:
                    raise CommandError("--model goes with --images, not with --predictions")
                predictions = evaluation.read_results(options["predictions"])
                name = options["name"] or options["predictions"].stem
                overlap, note = self._overlap(None, options) if options["train_shards"] else (None, "")
            else:
                predictions, name, overlap, note = self._predict_images(meta, options)
            report = evaluation.evaluate(predictions, name=name, meta=meta)
        except (evaluation.ResultsFormatError, FileNotFoundError, ValueError) as error:
            raise CommandError(str(error)) from None
        report.overlap = overlap.to_dict() if overlap is not None else None
        report.overlap_note = note
        if overlap is not None:
            self.stdout.write(f"overlap with the training data: {overlap.summary()}")
        elif note:
            self.stderr.write(f"warning: overlap with the training data not checked: {note}")

        self.stdout.write(evaluation.format_table(report))
        if options["store"]:
            self._store(report, options)
        if options["out"] is not None:
            paths = evaluation.write_report(report, options["out"])
            if options["images"] is not None:
                results = options["out"] / f"{Path(paths['csv']).name.removesuffix('_accuracy.csv')}_results.csv"
                results.write_text(evaluation.format_results(predictions), encoding="utf-8")
                paths["results"] = results
        if self._selective is not None:
            from predictor.ml import selective

            kept = [self._selective[i] for i in predictions.img_ids]
            report_s = selective.selective_report(
                name=report.name, distances_km=predictions.distances_km, localizable=[k[1] for k in kept],
                scores={score: [k[0][score] for k in kept] for score in kept[0][0]})
            for line in report_s.lines():
                self.stdout.write(line)
            if options["out"] is not None:
                paths.update(selective.write_selective(report_s, options["out"]))
        if options["out"] is not None:
            for kind, path in paths.items():
                self.stdout.write(f"wrote {kind}: {path}")

    def _store(self, report, options):
        """Write the figures next to the installed bundle's files (not among its checksummed ones)."""
        import json

        from predictor import registry

        if options["images"] is None:
            raise CommandError("--store keeps what a bundle measured: use it with --images and --model")
        name = options["model"] or registry.active_bundle_name() or ""
        bundle = registry.model_dir() / name
        if not name or "/" in name or not (bundle / "config.json").is_file():
            raise CommandError("--store needs --model naming an installed bundle (or an active one); see "
                               "`manage.py models`")
        test_set = Path(options["meta"]).stem
        figures = evaluation.stored_figures(
            report.distances_km, test_set=test_set,
            source=f"measured by `evaluate` on {report.overall.images} images of {Path(options['meta']).name}")
        figures["overlap"] = report.overlap
        figures["overlap_note"] = report.overlap_note
        target = bundle / "evaluations" / f"{test_set}.json"
        target.parent.mkdir(exist_ok=True)
        target.write_text(json.dumps(figures, indent=1) + "\n", encoding="utf-8")
        self.stdout.write(f"stored with the bundle: {target}")

    def _overlap(self, model, options):
        """(Overlap or None, why not checked) of the test set against the training data; refuses an overlap."""
        from predictor.ml.train.export import (check_test_overlap, samples_of_folders, test_samples,
                                               training_folders)

        folders, note = options["train_shards"], ""
        training = model.config.get("training") if model is not None else None
        if not folders and training:
            folders = training_folders(training)
            missing = [f for f in folders if not Path(f, "index.json").is_file()]
            if missing and not options["allow_overlap"]:
                raise CommandError(
                    f"{model.name} was trained on {', '.join(map(str, missing))}, which is not here, so the test set "
                    "cannot be compared with its training photos. Give --train-shards DIR (where those shards are "
                    "now), or --allow-overlap to evaluate without the check.")
            if missing:
                folders, note = None, f"its training shards ({', '.join(map(str, missing))}) are not here"
        elif not folders:
            note = ("the model is untrained: it learned from no photo" if model is not None and model.untrained else
                    "the bundle does not record its training images (an imported or older bundle); give "
                    "--train-shards to check")
        for folder in folders or []:
            if not Path(folder, "index.json").is_file():
                raise CommandError(f"--train-shards {folder}: not a shard folder (no index.json)")
        return check_test_overlap(
            options["name"] or Path(options["meta"]).stem, test_samples(options["meta"]),
            samples_of_folders(list(folders)) if folders else None, unchecked_note=note,
            allow_overlap=options["allow_overlap"])

    def _keep_scores(self, model, options):
        from predictor.ml import selective

        def keep(img_id, prediction):
            self._selective[img_id] = (selective.scores_of(prediction, model.kind),
                                       selective.localizable_of(prediction, conf_thres=options["conf_thres"]))
        return keep

    def _predict_images(self, meta, options):
        from predictor import registry
        from predictor.ml.bundle import BundleError
        from predictor.ml.engine import InferenceEngine
        from predictor.ml.kinds import load_bundle

        try:
            model = load_bundle(registry.resolve_bundle(options["model"]), device="cpu")
        except BundleError as error:
            raise CommandError(str(error)) from None
        if model.untrained:
            self.stderr.write(f"warning: {model.name} is an untrained (random-weight) bundle: its accuracy is "
                              "meaningless")
        overlap, note = self._overlap(model, options)  # before any photo is predicted
        engine = InferenceEngine(model, device=chosen_device(options), max_batch_size=options["batch_size"])
        try:
            predictions, skipped = evaluation.predict_image_folder(
                engine, image_dir=options["images"], meta=meta, batch_size=options["batch_size"],
                progress=lambda done, total: self.stderr.write(f"\r{done}/{total} images", ending=""),
                on_prediction=self._keep_scores(model, options) if self._selective is not None else None)
        finally:
            engine.close()
        self.stderr.write("")
        if skipped:
            examples = "; ".join(f"{k}: {v}" for k, v in list(skipped.items())[:5])
            self.stderr.write(f"skipped {len(skipped)} of {len(meta)} meta images ({examples}"
                              f"{' ...' if len(skipped) > 5 else ''})")
        return predictions, options["name"] or model.name, overlap, note

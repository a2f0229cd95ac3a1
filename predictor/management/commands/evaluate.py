"""Evaluate geolocation results against a test set's meta file and print the accuracy table.

    manage.py evaluate --meta im2gps3k_places365.csv --predictions ISNs_M-fstar-S3.csv [--out DIR]
    manage.py evaluate --meta im2gps3k_places365.csv --images DIR --model NAME [--out DIR]
"""
from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

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
        parser.add_argument("--device", default=None, help="inference device (with --images; default: settings)")
        parser.add_argument("--batch-size", type=int, default=32)
        parser.add_argument("--name", help="name of the report (default: the predictions file's or model's name)")
        parser.add_argument("--out", type=Path, help="folder for <name>_accuracy.{csv,json,png}")

    def handle(self, *args, **options):
        try:
            meta = evaluation.read_meta(options["meta"])
            if options["predictions"] is not None:
                if options["model"]:
                    raise CommandError("--model goes with --images, not with --predictions")
                predictions = evaluation.read_results(options["predictions"])
                name = options["name"] or options["predictions"].stem
            else:
                predictions, name = self._predict_images(meta, options)
            report = evaluation.evaluate(predictions, name=name, meta=meta)
        except (evaluation.ResultsFormatError, FileNotFoundError) as error:
            raise CommandError(str(error)) from None

        self.stdout.write(evaluation.format_table(report))
        if options["out"] is not None:
            paths = evaluation.write_report(report, options["out"])
            if options["images"] is not None:
                results = options["out"] / f"{Path(paths['csv']).name.removesuffix('_accuracy.csv')}_results.csv"
                results.write_text(evaluation.format_results(predictions), encoding="utf-8")
                paths["results"] = results
            for kind, path in paths.items():
                self.stdout.write(f"wrote {kind}: {path}")

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
        engine = InferenceEngine(model, device=options["device"] or settings.INFERENCE_DEVICE,
                                 max_batch_size=options["batch_size"])
        try:
            predictions, skipped = evaluation.predict_image_folder(
                engine, image_dir=options["images"], meta=meta, batch_size=options["batch_size"],
                progress=lambda done, total: self.stderr.write(f"\r{done}/{total} images", ending=""))
        finally:
            engine.close()
        self.stderr.write("")
        if skipped:
            examples = "; ".join(f"{k}: {v}" for k, v in list(skipped.items())[:5])
            self.stderr.write(f"skipped {len(skipped)} of {len(meta)} meta images ({examples}"
                              f"{' ...' if len(skipped) > 5 else ''})")
        return predictions, options["name"] or model.name

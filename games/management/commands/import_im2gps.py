"""`manage.py import_im2gps`: import Im2GPS photos, attribution and a model's guesses as game images."""
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from games import importing
from games.difficulty import recompute_difficulty


class Command(BaseCommand):
    help = ("Import Im2GPS game images: metadata CSV (IMG_ID, AUTHOR, LAT, LON, ..., Prob_indoor/natural/urban), "
            "photos from a folder or zip (or Flickr with --download), attribution and licences from "
            "scene_M_p_im2gps.csv, and a model's guesses from a published results file. Safe to re-run.")

    def add_arguments(self, parser):
        parser.add_argument("--meta", required=True, type=Path, help="Im2GPS metadata CSV (e.g. im2gps_places365.csv)")
        parser.add_argument("--images", type=Path, help="folder or zip holding the photos, named by IMG_ID")
        parser.add_argument("--attribution", type=Path, help="scene_M_p_im2gps.csv: url, author, licence columns")
        parser.add_argument("--predictions", type=Path, help="results file (img_id, gt_lat, predicted_lat, ...)")
        parser.add_argument("--model-name", default=importing.DEFAULT_MODEL_NAME,
                            help=f"name of the model the predictions belong to (default {importing.DEFAULT_MODEL_NAME!r})")
        parser.add_argument("--download", action="store_true",
                            help="download photos missing locally from Flickr (needs network)")

    def handle(self, *args, **options):
        try:
            report = importing.import_im2gps(
                meta_path=options["meta"], images=options["images"], attribution_path=options["attribution"],
                predictions_path=options["predictions"], model_name=options["model_name"],
                download_missing=options["download"], progress=lambda line: self.stderr.write(line))
        except importing.ImportFailed as error:
            raise CommandError(str(error)) from None
        for line in report.lines():
            self.stdout.write(line)
        counts = recompute_difficulty()
        self.stdout.write(f"difficulty: {counts['easy']} easy, {counts['medium']} medium, {counts['hard']} hard, "
                          f"{counts['']} unrated")

"""`manage.py import_im2gps`: import Im2GPS photos, attribution and models' published answers as game images."""
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from games import importing, recompute, selectors
from games.difficulty import recompute_difficulty
from predictor import worker


class Command(BaseCommand):
    help = ("Import Im2GPS game images from a folder or zip (--images). Without --meta, each photo's own JPEG "
            "comments give its position, owner, title, licence, photo page and date; with --meta (IMG_ID, AUTHOR, "
            "LAT, LON, ..., Prob_indoor/natural/urban) the CSV wins for the truth and the scene, and every "
            "disagreement is reported. --attribution reads scene_M_p_im2gps.csv, --predictions a published results "
            "file. Photos no results file covers get the active model's guess (if it is trained). Safe to re-run.")

    def add_arguments(self, parser):
        parser.add_argument("--meta", type=Path, help="Im2GPS metadata CSV (e.g. im2gps_places365.csv), optional")
        parser.add_argument("--images", type=Path, help="folder or zip holding the photos, named by IMG_ID")
        parser.add_argument("--attribution", type=Path, help="scene_M_p_im2gps.csv: url, author, licence columns")
        parser.add_argument("--predictions", type=Path, action="append", default=[],
                            help="results file (img_id, gt_lat, predicted_lat, ...); repeat for several models")
        parser.add_argument("--model-name", default="",
                            help="name of the model of a single --predictions file (default: the paper's name for "
                                 f"a published file, e.g. {importing.DEFAULT_MODEL_NAME!r})")
        parser.add_argument("--download", action="store_true",
                            help="download photos missing locally from Flickr (needs network and --meta)")
        parser.add_argument("--no-recompute", action="store_true",
                            help="do not run the active model on photos that no results file covers")

    def handle(self, *args, **options):
        if not options["meta"] and not options["images"]:
            raise CommandError("give --images DIR|ZIP (the photos' comments give the truth), --meta CSV, or both")
        predictions = options["predictions"]
        if options["model_name"] and len(predictions) > 1:
            raise CommandError("--model-name names one results file; with several, each file's name is used")
        try:
            first = predictions[0] if predictions else None
            report = importing.import_im2gps(
                meta_path=options["meta"], images=options["images"], attribution_path=options["attribution"],
                predictions_path=first,
                model_name=options["model_name"] or (importing.model_name_for(first) if first else
                                                     importing.DEFAULT_MODEL_NAME),
                download_missing=options["download"], progress=lambda line: self.stderr.write(line))
            for path in predictions[1:]:
                extra = importing.import_predictions_file(path)
                report.guesses_created += extra.guesses_created
                report.guesses_updated += extra.guesses_updated
                report.guesses_skipped += extra.guesses_skipped
        except importing.ImportFailed as error:
            raise CommandError(str(error)) from None
        for line in report.lines():
            self.stdout.write(line)
        finish_import(self.stdout, recompute_missing=not options["no_recompute"])


def finish_import(out, *, recompute_missing: bool = True) -> None:
    """What every import command does last: answer uncovered photos, rate difficulty, say what is playable."""
    if recompute_missing:
        job, line = recompute.queue_missing_guesses()
        if line:
            out.write(line)
        if job is not None:
            # A command line is a worker process of its own: it runs the job here (or waits for the worker that
            # took it first), so the import ends with the guesses stored.
            worker.run_job_here(job_id=job.queue_job_id)
            job.refresh_from_db()
            out.write(f"recompute job #{job.pk}: {job.message}")
    counts = recompute_difficulty()
    out.write(f"difficulty: {counts['easy']} easy, {counts['medium']} medium, {counts['hard']} hard, "
              f"{counts['']} unrated")
    for line in selectors.playability_lines():
        out.write(line)

"""Recompute the cached figures of /results/ (people against models), its charts and CSV export, and of /models/.

    manage.py recompute_results            # both pages
    manage.py recompute_results --only results

Run it on a schedule (cron, a systemd timer) in production; pages never compute figures per request.
"""
from __future__ import annotations

from django.core.management.base import BaseCommand

from results import services


class Command(BaseCommand):
    help = "Recompute the cached numbers, charts and CSV export of /results/ and the model cards of /models/."

    def add_arguments(self, parser):
        parser.add_argument("--only", choices=["results", "models"], help="recompute one page only")

    def handle(self, *args, **options):
        if options["only"] in (None, "models"):
            snapshot = services.compute_models_page()
            self.stdout.write(f"/models/: {len(snapshot.data['entries'])} models, {len(snapshot.charts)} charts "
                              f"in {snapshot.seconds:.2f} s")
        if options["only"] in (None, "results"):
            snapshot = services.recompute_results()
            self.stdout.write(f"/results/: {snapshot.data['rounds']} rounds, {len(snapshot.data['models'])} models, "
                              f"{snapshot.data['export_rows']} export rows in {snapshot.seconds:.2f} s")

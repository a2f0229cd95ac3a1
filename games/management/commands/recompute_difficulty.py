"""`manage.py recompute_difficulty`: rate every game image easy / medium / hard from model and player errors."""
from django.core.management.base import BaseCommand

from games.difficulty import recompute_difficulty


class Command(BaseCommand):
    help = ("Rate each game image easy, medium or hard (thirds by the reference model's error, blended with the "
            "players' mean error once it has been played enough). Import and recompute jobs run it too.")

    def handle(self, *args, **options):
        counts = recompute_difficulty()
        self.stdout.write(f"difficulty: {counts['easy']} easy, {counts['medium']} medium, {counts['hard']} hard, "
                          f"{counts['']} unrated")

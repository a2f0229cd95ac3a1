"""Train base(M) or one ISN on preprocessed shards (the paper's schedule by default).

    manage.py train --train-shards shards/mp16/train --val-shards shards/yfcc25600/train \
        --partitionings cells_50_5000.csv cells_50_2000.csv cells_50_1000.csv --output runs/base-M
    (multi-GPU: torchrun --nproc_per_node 8 -m predictor.ml.train <same options>)
"""
from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from predictor.management.devices import chosen_device
from predictor.ml.train.cli import add_train_arguments, config_from_options, summary_lines
from predictor.ml.train.loop import train


class Command(BaseCommand):
    help = "Train a geolocation network on shards; checkpoints every epoch, resumable, metrics.csv with GCD accuracy."

    def add_arguments(self, parser):
        add_train_arguments(parser)

    def handle(self, *args, **options):
        options["device"] = chosen_device(options)  # the same --device as every model command
        try:
            result = train(config_from_options(options))
        except (OSError, ValueError) as error:
            raise CommandError(str(error)) from None
        if result.get("metrics"):
            self.stdout.write("\n".join(summary_lines(result)))

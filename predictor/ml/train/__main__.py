"""`python -m predictor.ml.train ...`: training without Django, the form torchrun launches on each GPU."""
from __future__ import annotations

import argparse

from predictor.ml.train.cli import add_train_arguments, config_from_options, summary_lines
from predictor.ml.train.loop import train


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m predictor.ml.train", description=__doc__)
    add_train_arguments(parser)
    result = train(config_from_options(vars(parser.parse_args(argv))))
    if result.get("metrics"):
        print("\n".join(summary_lines(result)))


if __name__ == "__main__":
    main()

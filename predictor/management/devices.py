"""The one `--device` option of the model commands (predict, evaluate, train, export_bundle, import_checkpoint,
label_scenes): auto, cpu, cuda or cuda:N, defaulting to settings.INFERENCE_DEVICE (GEOWEB_DEVICE, "auto")."""
from __future__ import annotations

from django.conf import settings
from django.core.management.base import CommandError

HELP = ("where the networks run: auto (a GPU when PyTorch sees one, else the CPU), cpu, cuda or cuda:N "
        "(default: GEOWEB_DEVICE, else auto)")


def add_device_argument(parser) -> None:
    parser.add_argument("--device", default=None, help=HELP)


def chosen_device(options: dict) -> str:
    """The device the options ask for, resolved ("auto" becomes cuda or cpu); a clear error for a missing GPU."""
    from predictor.ml.engine import resolve_device

    value = options.get("device") or settings.INFERENCE_DEVICE
    try:
        return str(resolve_device(value))
    except (RuntimeError, ValueError) as error:
        raise CommandError(f"--device {value}: {error}") from None

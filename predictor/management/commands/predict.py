"""Geolocate photos from the command line with an installed model bundle.

    manage.py predict IMAGES... [--model NAME|PATH] [--device cpu] [--cam DIR] [--out results.csv|results.json]
                                [--top-k 10] [--batch-size 32]

Per photo: scene (S3 probabilities, top Places365 categories), the coarse/middle/fine and hierarchical (f*)
predictions, the top-k cells, and the confidence. Unreadable files are reported and skipped.
"""
from __future__ import annotations

import csv
import sys
import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from predictor import registry
from predictor.management.devices import add_device_argument, chosen_device
from predictor.ml.bundle import BundleError
from predictor.ml.engine import InferenceEngine
from predictor.ml.kinds import load_bundle
from predictor.ml.model import offers_maps
from predictor.ml.prediction import HIERARCHY, S3_CONCEPTS, Prediction

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".heic", ".heif", ".avif", ".gif", ".bmp", ".tif", ".tiff"}


def _expand(paths: list[str]) -> list[Path]:
    """Files as given; folders contribute their image files (sorted)."""
    out = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            out += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            out.append(path)
    return out


def _csv_row(path: Path, result, names: list[str]) -> dict:
    row = {"image": str(path)}
    if isinstance(result, Exception):
        row["error"] = str(result)
        return row
    row["error"] = ""
    row["scene"] = result.scene.concept
    for concept in S3_CONCEPTS:
        row[f"p_{concept}"] = f"{result.scene.s3[concept]:.4f}"
    row["places365_top5"] = "; ".join(f"{label} ({p:.3f})" for label, p in result.scene.places365_top)
    for name in names + [HIERARCHY]:
        lat, lon = result.argmax[name]
        row[f"{name}_lat"], row[f"{name}_lon"] = f"{lat:.6f}", f"{lon:.6f}"
    row["confidence"] = f"{result.confidence:.4f}"
    row["top_cells"] = json.dumps([[c.token, round(c.probability, 6), round(c.lat, 6), round(c.lon, 6)]
                                   for c in result.top_cells[HIERARCHY]])
    row["untrained"] = str(result.untrained).lower()
    return row


class Command(BaseCommand):
    help = "Predict where photos were taken (scene, cells per partitioning, f* estimate, top-k, confidence)."

    def add_arguments(self, parser):
        parser.add_argument("images", nargs="+", help="image files or folders of images")
        parser.add_argument("--model", help="installed bundle name or bundle path (default: the active model)")
        add_device_argument(parser)
        parser.add_argument("--cam", type=Path, metavar="DIR", help="write class activation map PNGs here")
        parser.add_argument("--out", type=Path, help="write all results to a .csv or .json file")
        parser.add_argument("--top-k", type=int, default=10, help="cells listed per partitioning (default 10)")
        parser.add_argument("--batch-size", type=int, default=32)

    def handle(self, *args, **options):
        out: Path | None = options["out"]
        if out is not None and out.suffix.lower() not in (".csv", ".json"):
            raise CommandError("--out must end in .csv or .json")
        images = _expand(options["images"])
        if not images:
            raise CommandError("no image files found")
        try:
            model = load_bundle(registry.resolve_bundle(options["model"]))
        except BundleError as error:
            raise CommandError(str(error)) from None
        if model.untrained:
            self.stderr.write(self.style.WARNING(f"model {model.name} is UNTRAINED: its predictions are meaningless"))
        elif model.scene_untrained:
            # An ISN routes each photo by its scene (config.json's architecture "routing": "isn-s3").
            routed = (model.config.get("architecture") or {}).get("routing") == "isn-s3"
            self.stderr.write(self.style.WARNING(
                f"model {model.name}: the scene classifier is UNTRAINED (random weights), so the scene shown"
                + (" and the network each photo is routed to mean nothing" if routed else " means nothing")
                + "; the geolocation networks are trained"))
        device = chosen_device(options)
        cam_dir: Path | None = options["cam"]
        if cam_dir is not None and not offers_maps(model):
            self.stderr.write(self.style.WARNING(f"model {model.name} (kind {model.kind}) gives no activation maps: "
                                                 f"nothing is written to {cam_dir}"))
            cam_dir = None
        if cam_dir is not None:
            cam_dir.mkdir(parents=True, exist_ok=True)
        engine = InferenceEngine(model, device=device, max_batch_size=options["batch_size"], max_wait_ms=5,
                                 top_k=options["top_k"])
        results: list = []
        try:
            from tqdm import tqdm

            progress = tqdm(total=len(images), unit="img", disable=len(images) < 20, file=sys.stderr)
            for start in range(0, len(images), options["batch_size"]):
                chunk = images[start:start + options["batch_size"]]
                batch = engine.predict_many(chunk, cam=cam_dir is not None)
                for path, result in zip(chunk, batch):
                    results.append(result)
                    self._report(path, result)
                    if cam_dir is not None and isinstance(result, Prediction) and result.cam is not None:
                        self._write_cam(path, result, cam_dir)
                progress.update(len(chunk))
            progress.close()
        finally:
            engine.close()
        failed = sum(isinstance(r, Exception) for r in results)
        if out is not None:
            self._write(out, images, results, model.partitioning_names)
            self.stdout.write(f"wrote {out}")
        self.stdout.write(f"{len(results) - failed} predicted, {failed} failed")

    def _report(self, path: Path, result) -> None:
        if isinstance(result, Exception):
            self.stderr.write(f"{path}: ERROR {result}")
            return
        scene = result.scene
        category = f", top scene category {scene.places365_top[0][0]}" if scene.places365_top else ""
        refined = f", refined: {result.refined.note}" if result.refined is not None and result.refined.note else ""
        self.stdout.write(f"{path}: {result.lat:.4f}, {result.lon:.4f} (confidence {100 * result.confidence:.1f}%), "
                          f"scene {scene.concept} {scene.s3[scene.concept]:.2f}{category}{refined}")

    def _write_cam(self, path: Path, result: Prediction, cam_dir: Path) -> None:
        from predictor.ml.cam import render_cam_png
        from predictor.ml.preprocess import open_image

        (cam_dir / f"{path.stem}_cam.png").write_bytes(render_cam_png(open_image(path), result.cam))

    def _write(self, out: Path, images: list[Path], results: list, names: list[str]) -> None:
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.suffix.lower() == ".json":
            records = [{"image": str(p), "error": str(r)} if isinstance(r, Exception)
                       else {"image": str(p), **r.to_dict()} for p, r in zip(images, results)]
            out.write_text(json.dumps(records, indent=1) + "\n", encoding="utf-8")
            return
        fields = (["image", "error", "scene"] + [f"p_{c}" for c in S3_CONCEPTS] + ["places365_top5"]
                  + [f"{n}_{axis}" for n in names + [HIERARCHY] for axis in ("lat", "lon")]
                  + ["confidence", "top_cells", "untrained"])
        with out.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=fields)
            writer.writeheader()
            for path, result in zip(images, results):
                writer.writerow(_csv_row(path, result, names))

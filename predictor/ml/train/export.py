"""Turning training checkpoints (or TIB's Lightning checkpoint) into a servable bundle whose model card carries
measured accuracy: the validation accuracy recorded during training and, when given, accuracy on a test set
(Im2GPS / Im2GPS3k metadata CSV + image folder) measured through the same engine the app serves with.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np

from predictor.ml.geodesy import ACCURACY_THRESHOLDS_KM, great_circle_km
from predictor.ml.network import GeoNetwork
from predictor.ml.partitions import Partitioning
from predictor.ml.prediction import S3_CONCEPTS
from predictor.ml.train.datasets import CsvPhotoSource


def scene_parts(*, scene_bundle: str | Path | None = None, scene_weights: str | Path | None = None,
                scene_backbone: str = "resnet50", random_scene: bool = False):
    """(scene network, SceneMapping, note for the card) from a bundle, a safetensors file, or random weights."""
    from predictor.ml.scenes import SceneMapping

    if scene_bundle:
        from predictor.ml.kinds import load_bundle
        from predictor.ml.model import PlacesSceneClassifier, offers
        model = load_bundle(scene_bundle)
        if not offers(model, PlacesSceneClassifier):
            raise ValueError(f"bundle {model.name!r} (kind {model.kind}) has no Places365 scene classifier to copy")
        return model.scene.network, model.scene_mapping, f"scene classifier copied from bundle {model.name!r}"
    if scene_weights:
        from predictor.ml.network import load_state_dict_file
        network = GeoNetwork(scene_backbone, [365])
        network.load_state_dict(load_state_dict_file(scene_weights))
        return network, SceneMapping.load_default(), f"scene classifier {scene_backbone} from {Path(scene_weights).name}"
    if random_scene:
        return (GeoNetwork("tiny", [365]), SceneMapping.load_default(),
                "scene classifier has RANDOM weights: scene labels shown by the app are meaningless")
    raise ValueError("a bundle needs a scene classifier: give a bundle to copy it from, a Places365 "
                     "safetensors file, or ask explicitly for a random one")


def validation_accuracy(history: list[dict]) -> dict[str, float]:
    """f* accuracy per threshold at the epoch with the lowest validation loss."""
    rows = [r for r in history if r.get("val_loss") is not None]
    if not rows:
        return {}
    best = min(rows, key=lambda r: r["val_loss"])
    return {f"{int(t)}": float(best[f"val_acc{int(t)}km_hierarchy"]) for t in ACCURACY_THRESHOLDS_KM}


VALIDATION_LABEL = "validation (held-out shards, f*, centre crop)"


def validation_sections(histories: dict[str, list[dict]]) -> dict[str, dict[str, float]]:
    """Model card accuracy entries from training histories: one for a base network, one per ISN (each measured
    on the validation shards that ISN was trained with), at each network's lowest-validation-loss epoch."""
    sections = {}
    for concept, history in histories.items():
        values = validation_accuracy(history)
        if not values:
            continue
        label = VALIDATION_LABEL if concept == "base" else f"ISN {concept}: {VALIDATION_LABEL}"
        sections[label] = values
    return sections


def evaluate_test_set(bundle_path: str | Path, *, metadata: str | Path, images: str | Path,
                      device: str = "cpu", batch_size: int = 32) -> tuple[dict[str, float], dict]:
    """Accuracy of a bundle on a metadata CSV + image folder, predicted by the serving engine (test-time crops,
    ISN routing, f*). Returns ({threshold km: fraction}, counts of images used/skipped)."""
    from predictor.ml.engine import InferenceEngine
    from predictor.ml.kinds import load_bundle

    model = load_bundle(bundle_path, device=device)
    source = CsvPhotoSource(metadata, images=images)
    distances, failed = [], 0
    engine = InferenceEngine(model, device=device, max_batch_size=batch_size, max_wait_ms=5)
    try:
        batch: list = []

        def run():
            nonlocal failed
            results = engine.predict_many([p.image for p in batch])
            for photo, result in zip(batch, results):
                if isinstance(result, Exception):
                    failed += 1
                    continue
                distances.append(great_circle_km(photo.lat, photo.lon, result.lat, result.lon))
            batch.clear()

        for photo in source:
            batch.append(photo)
            if len(batch) >= batch_size:
                run()
        if batch:
            run()
    finally:
        engine.close()
    d = np.asarray(distances, dtype=float)
    accuracy = {f"{int(t)}": float(np.mean(d <= t)) for t in ACCURACY_THRESHOLDS_KM} if d.size else {}
    counts = {"evaluated": int(d.size), "prediction_errors": failed, **{
        k: v for k, v in source.report.as_dict().items() if k != "examples" and v}}
    return accuracy, counts


def export_bundle(output: str | Path, *, name: str, networks: dict[str, GeoNetwork],
                  partitionings: list[Partitioning], scene_network: GeoNetwork, scene_mapping,
                  training_data: str, validation: dict[str, dict[str, float]] | None = None, notes: str = "",
                  test_sets: list[tuple[str, Path, Path]] = (), device: str = "cpu",
                  overwrite: bool = False) -> tuple[Path, dict]:
    """Write the bundle; test sets given as (name, metadata CSV, image folder) are evaluated and recorded.
    `validation` maps a card label to {threshold km: fraction} (see `validation_sections`)."""
    from predictor.ml.isn import save_bundle

    output = Path(output)
    if output.exists() and not overwrite:
        raise FileExistsError(f"{output} already exists")
    accuracy: dict[str, dict | str] = {}
    accuracy.update(validation or {})
    measured = {}
    card = {"training_data": training_data, "notes": notes}
    common = dict(name=name, networks=networks, partitionings=partitionings, scene_network=scene_network,
                  scene_mapping=scene_mapping)
    if test_sets:
        # Evaluate the exact files that will be shipped: save once, measure, then save with the card.
        with tempfile.TemporaryDirectory(prefix="geoweb-export-") as scratch:
            draft = save_bundle(Path(scratch) / name, model_card=card, **common)
            for test_name, metadata, images in test_sets:
                values, counts = evaluate_test_set(draft, metadata=metadata, images=images, device=device)
                accuracy[f"{test_name} ({counts['evaluated']} images)"] = values or "no image could be evaluated"
                measured[test_name] = {"accuracy": values, "counts": counts}
    card["accuracy"] = accuracy or "not measured"
    if output.exists():
        shutil.rmtree(output)
    path = save_bundle(output, model_card=card, overwrite=overwrite, **common)
    return path, {"accuracy": accuracy, "test_sets": measured}


def networks_from_checkpoints(checkpoints: dict[str, str | Path]):
    """{"base": path} or {concept: path} of training checkpoints -> (networks, partitionings, histories)."""
    from predictor.ml.train.loop import load_checkpoint, network_from_checkpoint

    if set(checkpoints) not in ({"base"}, set(S3_CONCEPTS)):
        raise ValueError(f"give one base checkpoint or one per concept {S3_CONCEPTS}, not {sorted(checkpoints)}")
    networks, histories, partitionings = {}, {}, None
    for concept, path in checkpoints.items():
        state = load_checkpoint(path)
        if partitionings is None:
            partitionings = state["partitionings"]
        elif [p.tokens for p in state["partitionings"]] != [p.tokens for p in partitionings]:
            raise ValueError(f"{path}: trained on other partitionings than the other checkpoints")
        networks[concept] = network_from_checkpoint(state)
        histories[concept] = state["history"]
    return networks, partitionings, histories

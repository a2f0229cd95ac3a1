"""Turning training checkpoints (or TIB's Lightning checkpoint) into a servable bundle whose model card carries
measured accuracy: the validation accuracy recorded during training and, when given, accuracy on a test set
(Im2GPS / Im2GPS3k metadata CSV + image folder) measured through the same engine the app serves with.

Before a test set is scored it is compared with the training data (image ids, and (author, coordinate)); a test
photo that is a training photo stops the export unless the caller allows it, and the card then says how many.
"""
from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from predictor.ml.geodesy import ACCURACY_THRESHOLDS_KM
from predictor.ml.network import GeoNetwork
from predictor.ml.partitions import Partitioning
from predictor.ml.prediction import S3_CONCEPTS
from predictor.ml.train.card import TestResult, card_sections, validation_crop
from predictor.ml.train.datasets import CsvPhotoSource, SourceReport, read_metadata
from predictor.ml.train.holdout import Sample, find_overlap, read_samples, samples_of_rows


class OverlapError(ValueError):
    """A test set holds training photos, or cannot be checked against training data that should be there."""


@dataclass
class SceneSource:
    network: GeoNetwork
    mapping: object  # predictor.ml.scenes.SceneMapping
    note: str  # where the scene classifier comes from, for the card
    untrained: bool  # random weights: its scene labels (and ISN routing) mean nothing


def scene_source(*, scene_bundle: str | Path | None = None, scene_weights: str | Path | None = None,
                 scene_backbone: str = "resnet50", random_scene: bool = False) -> SceneSource:
    """The scene classifier of a new bundle: from a bundle, a safetensors file, or random weights."""
    from predictor.ml.scenes import SceneMapping

    if scene_bundle:
        from predictor.ml.kinds import load_bundle
        from predictor.ml.model import PlacesSceneClassifier, offers
        model = load_bundle(scene_bundle)
        if not offers(model, PlacesSceneClassifier):
            raise ValueError(f"bundle {model.name!r} (kind {model.kind}) has no Places365 scene classifier to copy")
        note = f"scene classifier copied from bundle {model.name!r}"
        return SceneSource(model.scene.network, model.scene_mapping,
                           note + (", whose scene classifier has random weights" if model.scene_untrained else ""),
                           model.scene_untrained)
    if scene_weights:
        from predictor.ml.network import load_state_dict_file
        network = GeoNetwork(scene_backbone, [365])
        network.load_state_dict(load_state_dict_file(scene_weights))
        return SceneSource(network, SceneMapping.load_default(),
                           f"scene classifier {scene_backbone} from {Path(scene_weights).name}", False)
    if random_scene:
        return SceneSource(GeoNetwork("tiny", [365]), SceneMapping.load_default(),
                           "scene classifier has RANDOM weights: scene labels shown by the app are meaningless", True)
    raise ValueError("a bundle needs a scene classifier: give a bundle to copy it from, a Places365 "
                     "safetensors file, or ask explicitly for a random one")


def validation_accuracy(history: list[dict]) -> dict[str, float]:
    """f* accuracy per threshold at the epoch with the lowest validation loss."""
    rows = [r for r in history if r.get("val_loss") is not None]
    if not rows:
        return {}
    best = min(rows, key=lambda r: r["val_loss"])
    return {f"{int(t)}": float(best[f"val_acc{int(t)}km_hierarchy"]) for t in ACCURACY_THRESHOLDS_KM}


def validation_label(history: list[dict], crop_size: int | None = None, validation: dict | None = None) -> str:
    rows = [r for r in history if r.get("val_loss") is not None]
    best = min(rows, key=lambda r: r["val_loss"]) if rows else {}
    parts = [f"{best['val_images']} images" if "val_images" in best else None,
             validation["protocol"] if validation else "held-out shards", "f*",
             validation_crop(crop_size) if crop_size else "centre crop"]
    return f"validation ({'; '.join(p for p in parts if p)})"


def validation_sections(histories: dict[str, list[dict]], *, crop_sizes: dict[str, int] | None = None,
                        validations: dict[str, dict | None] | None = None) -> dict[str, dict[str, float]]:
    """Model card accuracy entries from training histories: one for a base network, one per ISN (each measured
    on the validation shards that ISN was trained with), at each network's lowest-validation-loss epoch; the label
    states the protocol."""
    sections = {}
    for concept, history in histories.items():
        values = validation_accuracy(history)
        if not values:
            continue
        label = validation_label(history, (crop_sizes or {}).get(concept), (validations or {}).get(concept))
        sections[label if concept == "base" else f"ISN {concept}: {label}"] = values
    return sections


def test_samples(metadata: str | Path) -> list[Sample]:
    """(id, author, lat, lon) of a test set's metadata CSV, for the overlap check."""
    return samples_of_rows(read_metadata(metadata, SourceReport()).values())


def check_test_overlap(name: str, samples: list[Sample], training: Callable[[], Iterable[Sample]] | None, *,
                       unchecked_note: str, allow_overlap: bool) -> tuple:
    """(Overlap or None, note) for one test set; raises OverlapError when test photos are training photos."""
    if training is None:
        return None, unchecked_note
    overlap = find_overlap(samples, training())
    if overlap.overlapping and not allow_overlap:
        raise OverlapError(
            f"test set {name!r}: {overlap.overlapping} of its {overlap.evaluated} photos are training photos "
            f"({overlap.shared_ids} by image id, {overlap.shared_shots} by author and coordinate; e.g. "
            f"{'; '.join(overlap.examples[:2])}). Scoring them would report how well the network remembers, not "
            "how well it locates new photos. Remove them from the test set, or give --allow-overlap to measure "
            "anyway (the count is then printed and written on the card).")
    return overlap, ""


def evaluate_test_set(bundle_path: str | Path, *, metadata: str | Path, images: str | Path,
                      device: str = "cpu", batch_size: int = 32, name: str = "test",
                      progress: bool = False) -> tuple[dict[str, float], dict, object]:
    """Accuracy of a bundle on a metadata CSV + image folder, predicted by the serving engine (test-time crops,
    ISN routing, f*). Returns ({threshold km: fraction}, counts of images used/skipped, the EvaluationReport with
    the prediction spread and calibration)."""
    from predictor.ml import evaluation
    from predictor.ml.engine import InferenceEngine
    from predictor.ml.kinds import load_bundle

    model = load_bundle(bundle_path, device=device)
    source = CsvPhotoSource(metadata, images=images)
    ids, truth, predicted, confidence, failed = [], [], [], [], 0
    engine = InferenceEngine(model, device=device, max_batch_size=batch_size, max_wait_ms=5)
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(read_metadata(metadata, SourceReport())), desc=f"test {name}", unit="img")
    try:
        batch: list = []

        def run():
            nonlocal failed
            results = engine.predict_many([p.image for p in batch])
            for photo, result in zip(batch, results):
                if isinstance(result, Exception):
                    failed += 1
                    continue
                ids.append(photo.id)
                truth.append((photo.lat, photo.lon))
                predicted.append((result.lat, result.lon))
                confidence.append(float(result.confidence))
            if bar is not None:
                bar.update(len(batch))
            batch.clear()

        for photo in source:
            batch.append(photo)
            if len(batch) >= batch_size:
                run()
        if batch:
            run()
    finally:
        engine.close()
        if bar is not None:
            bar.close()
    counts = {"evaluated": len(ids), "prediction_errors": failed, **{
        k: v for k, v in source.report.as_dict().items() if k != "examples" and v}}
    if not ids:
        return {}, counts, None
    t, p = np.asarray(truth), np.asarray(predicted)
    report = evaluation.evaluate(evaluation.ImagePredictions(img_ids=ids, gt_lat=t[:, 0], gt_lon=t[:, 1],
                                                             pred_lat=p[:, 0], pred_lon=p[:, 1],
                                                             confidence=np.asarray(confidence)), name=name)
    accuracy = {f"{int(k)}": float(v) for k, v in report.overall.accuracy.items()}
    return accuracy, counts, report


def export_bundle(output: str | Path, *, name: str, networks: dict[str, GeoNetwork],
                  partitionings: list[Partitioning], scene_network: GeoNetwork, scene_mapping,
                  training_data: str, validation: dict[str, dict[str, float]] | None = None, notes: str = "",
                  test_sets: list[tuple[str, Path, Path]] = (), device: str = "cpu",
                  overwrite: bool = False, training: dict | None = None, histories: dict | None = None,
                  scene_note: str = "", scene_untrained: bool = False,
                  training_samples: Callable[[], Iterable[Sample]] | None = None,
                  unchecked_note: str = "the training images are not known", allow_overlap: bool = False,
                  progress: bool = False) -> tuple[Path, dict]:
    """Write the bundle; test sets given as (name, metadata CSV, image folder) are checked against the training
    data (`training_samples`, a function streaming them), evaluated and recorded. `validation` maps a card label
    to {threshold km: fraction} (see `validation_sections`); `training` is `card.training_record(...)`."""
    from predictor.ml.isn import save_bundle
    from predictor.ml.preprocess import CropSpec
    from predictor.ml.swc import SwCNetwork, save_swc_from_networks

    if any(isinstance(n, SwCNetwork) for n in networks.values()):
        save_bundle = save_swc_from_networks  # a network trained with a retrieval head: an "swc" bundle

    output = Path(output)
    if output.exists() and not overwrite:
        raise FileExistsError(f"{output} already exists")
    # Every test set is checked before anything is measured, so a refusal costs no evaluation time.
    checked = []
    for test_name, metadata, images in test_sets:
        overlap, note = check_test_overlap(test_name, test_samples(metadata), training_samples,
                                           unchecked_note=unchecked_note, allow_overlap=allow_overlap)
        checked.append((test_name, metadata, images, overlap, note))
    accuracy: dict[str, dict | str] = {}
    accuracy.update(validation or {})
    crops = CropSpec().to_config()
    card = {"training_data": training_data, "notes": notes}
    common = dict(name=name, networks=networks, partitionings=partitionings, scene_network=scene_network,
                  scene_mapping=scene_mapping, training=training, scene_untrained=scene_untrained)
    results: list[TestResult] = []
    if checked:
        # Evaluate the exact files that will be shipped: save once, measure, then save with the card.
        with tempfile.TemporaryDirectory(prefix="geoweb-export-") as scratch:
            draft = save_bundle(Path(scratch) / name, model_card=card, **common)
            for test_name, metadata, images, overlap, note in checked:
                values, counts, report = evaluate_test_set(draft, metadata=metadata, images=images, device=device,
                                                           name=test_name, progress=progress)
                result = TestResult(test_name, values, counts, overlap=overlap, overlap_note=note,
                                    allowed_overlap=bool(overlap and overlap.overlapping),
                                    spread=report.spread if report is not None else None)
                accuracy[result.label] = values or "no image could be evaluated"
                results.append(result)
    card["accuracy"] = accuracy or "not measured"
    card["sections"] = card_sections(training=training, crops=crops, tests=results, histories=histories or {},
                                     scene_note=scene_note, scene_untrained=scene_untrained)
    if output.exists():
        shutil.rmtree(output)
    path = save_bundle(output, model_card=card, overwrite=overwrite, **common)
    return path, {"accuracy": accuracy, "test_sets": {r.name: r.to_dict() for r in results},
                  "sections": card["sections"]}


def checkpoint_concept(state: dict) -> str | None:
    """The S3 concept a training checkpoint was trained on (`train --concept`), None for a base network."""
    return (state.get("config") or {}).get("concept")


def load_checkpoints(base: str | Path | None = None, isn: Iterable[str] = ()) -> dict[str, dict]:
    """{"base": state} or {concept: state} from `--checkpoint PATH` or `--isn [CONCEPT=]PATH ...`.

    An ISN's concept is the one stored in its checkpoint; a concept written before the path must agree with it.
    """
    from predictor.ml.train.loop import load_checkpoint

    if base:
        state = load_checkpoint(base)
        if checkpoint_concept(state):
            raise ValueError(f"{base} was trained for the {checkpoint_concept(state)!r} concept only (train "
                             "--concept), so as a base network it would answer every photo with an ISN's view: "
                             "bundle the three ISNs with --isn instead.")
        return {"base": state}
    states: dict[str, dict] = {}
    for item in isn:
        claimed, _, path = item.partition("=")
        if claimed not in S3_CONCEPTS:  # a bare path (which may itself hold "=", as Lightning's file names do)
            claimed, path = "", item
        state = load_checkpoint(path)
        concept = checkpoint_concept(state)
        if concept is None:
            raise ValueError(f"{path} is a base network (trained on every photo, without --concept)" +
                             (f", not the {claimed!r} ISN" if claimed else "") + ": an ISN bundle needs one network "
                             "trained per concept (train --concept indoor|natural|urban --scene-labels ...).")
        if claimed and claimed != concept:
            raise ValueError(f"{path} was trained for the {concept!r} concept, not {claimed!r}: give it as "
                             f"{concept}={path}.")
        if concept in states:
            raise ValueError(f"two checkpoints were trained for the {concept!r} concept; an ISN bundle needs one "
                             f"each for {', '.join(S3_CONCEPTS)}")
        states[concept] = state
    missing = [c for c in S3_CONCEPTS if c not in states]
    if missing:
        raise ValueError(f"no checkpoint for the {', '.join(missing)} concept(s): an ISN bundle needs one network "
                         f"each for {', '.join(S3_CONCEPTS)}")
    return {c: states[c] for c in S3_CONCEPTS}


def networks_from_states(states: dict[str, dict]):
    """{"base": state} or {concept: state} of training checkpoints -> (networks, partitionings, histories)."""
    from predictor.ml.train.loop import network_from_checkpoint

    networks, histories, partitionings = {}, {}, None
    for concept, state in states.items():
        if partitionings is None:
            partitionings = state["partitionings"]
        elif [p.tokens for p in state["partitionings"]] != [p.tokens for p in partitionings]:
            raise ValueError(f"the {concept} checkpoint was trained on other partitionings than the others")
        networks[concept] = network_from_checkpoint(state)
        histories[concept] = state["history"]
    return networks, partitionings, histories


def networks_from_checkpoints(checkpoints: dict[str, str | Path]):
    """{"base": path} or {concept: path} of training checkpoints -> (networks, partitionings, histories)."""
    if set(checkpoints) not in ({"base"}, set(S3_CONCEPTS)):
        raise ValueError(f"give one base checkpoint or one per concept {S3_CONCEPTS}, not {sorted(checkpoints)}")
    if "base" in checkpoints:
        states = load_checkpoints(base=checkpoints["base"])
    else:
        states = load_checkpoints(isn=[f"{c}={p}" for c, p in checkpoints.items()])
    return networks_from_states(states)


def training_folders(training: dict) -> list[str]:
    """The shard folders (training and validation) the networks of a `training_record` learned from or were
    selected on."""
    folders = []
    for network in training["networks"].values():
        for key in ("train_shards", "val_shards"):
            if network.get(key) and network[key] not in folders:
                folders.append(network[key])
    return folders


def samples_of_folders(folders: list[str | Path]) -> Callable[[], Iterable[Sample]]:
    """A function streaming every sample of the shard folders (read again on each call)."""
    def stream():
        for folder in folders:
            yield from read_samples(folder)
    return stream

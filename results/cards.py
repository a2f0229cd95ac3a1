"""Model cards for /models/: one per installed bundle (from its config.json and MODEL_CARD.md) and one per model
whose published answers the games play against (from the paper), in the sections of the model-card convention:
details, intended and out-of-scope uses, bias/risks/limitations, training data and procedure, evaluation.

Plain data (dicts of strings and numbers), so the cache in results.services can store it as JSON.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from predictor.ml.bundle import CONFIG, MODEL_CARD
from results import published

INTENDED_USES = [
    "Estimating where a photo was taken, at the scale of a region, country or continent, for research on photo "
    "geolocation and for the GeoWeb game, where people compare their guesses with the model's.",
    "Comparing geolocation methods on the Im2GPS and Im2GPS3k benchmarks.",
]
OUT_OF_SCOPE = [
    "Locating people: it must not be used to find where a person lives, works or is. The original authors switched "
    "off uploads on their own demo after it was misused for that.",
    "Any decision about a person (policing, immigration, insurance, journalism about private individuals).",
    "Navigation, emergency response or anything that needs a position it can guarantee: even the best answers are "
    "wrong by more than 25 km for most photos.",
]
RISKS = [
    "It must not be used to locate people. A photo's location can reveal where someone lives or spends their time; "
    "GeoWeb's upload path has terms, quotas and coarse answers for this reason (docs/responsible-use.md).",
    "Geographic bias: the training photos (Flickr, YFCC100M / MP-16) over-represent North America, Western Europe "
    "and East Asia and tourist sights; photos from Africa, Central Asia and rural areas are placed less well.",
    "Confident-looking errors: the answer is always a point, even for a photo with no clue (an indoor room, a "
    "close-up); indoor photos are located far worse than urban ones.",
    "Flickr photos of the test sets and the training set come from the same community and years; accuracy on "
    "other photos (phones, street view, social media today) is lower.",
]
UNTRAINED_RISK = ("UNTRAINED: random weights. Its answers are meaningless and it has no accuracy; it exists so the "
                  "app runs before a trained bundle is installed. It never plays a game.")

PAPER = "Müller-Budack, Pustu-Iren, Ewerth, ECCV 2018 (TIBHannover/GeoEstimation)"
# The paper's models whose per-image answers are published (results/im2gps*, GPL-3.0) and are game opponents.
PAPER_MODELS = {
    "ISNs(M, f*, S3)": ("Three ResNet-101 networks, one per scene concept (indoor, natural, urban; Individual Scenery "
                        "Networks); a Places365 ResNet-152 picks the network by the photo's S3 scene (hard argmax)."),
    "base(M, f*)": "One ResNet-101 (TensorFlow) for all photos.",
    "base(M, m)": "One ResNet-101 (TensorFlow) for all photos.",
    "base(L, m)": "One ResNet-101 (TensorFlow) for all photos.",
    "base-vgg(L, m)": "One VGG network (TensorFlow) for all photos.",
    "base-vgg-c(L, m)": "The VGG network of base-vgg(L, m), answering with the geometric centre of the cell.",
}
PAPER_PREDICTION = {
    "f*": "f*: the hierarchical prediction (the fine cell's probability multiplied by its middle and coarse "
          "parents'), answered with the mean position of the cell's training photos.",
    "m": "m: the most probable cell, answered with the mean position of the cell's training photos.",
}
PAPER_TRAINING = [
    "Training data: MP-16, 4,723,695 geotagged Flickr photos from YFCC100M.",
    "Partitionings: S2 cells adapted to the photo density, 50 to 5,000 (coarse, 3,298 cells), 2,000 (middle, "
    "7,202) and 1,000 (fine, 12,893) photos per cell; one classification head per partitioning, the loss is the "
    "sum of their cross-entropies.",
    "Procedure: ImageNet-initialised backbone, SGD, batch 128, random 224 px crops and horizontal flips (the "
    "paper's description; TF training code was never published). The authors' later PyTorch base(M, f*): SGD lr "
    "0.01, momentum 0.9, weight decay 1e-4, MultiStepLR gamma 0.5 at epochs 4, 8, 12, 13, 14, 15, 15 epochs, "
    "batch 128, mixed precision, RandomResizedCrop(224, scale 0.66-1.0).",
    "Test-time: shorter side 224 px, three 224 px crops along the longer side, the mean of their probabilities.",
]


def _sections(markdown: str) -> tuple[list[str], dict[str, list[str]]]:
    """(lines before the first "## ", {title: lines}) of a MODEL_CARD.md."""
    head, sections, current = [], {}, None
    for raw in markdown.splitlines():
        line = raw.rstrip()
        if line.startswith("## "):
            current = line[3:].strip()
            sections[current] = []
        elif line.startswith("# "):
            continue
        elif line.strip():
            (sections[current] if current else head).append(line.strip())
    return head, sections


def _plain(lines: list[str]) -> list[str]:
    return [re.sub(r"^[-*]\s+", "", line).replace("**", "") for line in lines]


_ACCURACY_LINE = re.compile(r"^-?\s*(?P<label>.+?):\s*(?P<cells>\d+(?:\.\d+)?\s*km:.*)$")
_CELL = re.compile(r"(\d+(?:\.\d+)?)\s*km:\s*(\d+(?:\.\d+)?)%")
_IMAGES = re.compile(r"\((\d[\d,]*) images")


def card_accuracy(lines: list[str]) -> dict[str, dict]:
    """Im2GPS / Im2GPS3k accuracy measured on the bundle (export_bundle --test, `evaluate`) as written in its card's
    "Measured accuracy" lines: {dataset: {"percent": [...], "images": n, "source": ...}}."""
    found = {}
    for line in lines:
        match = _ACCURACY_LINE.match(line.strip())
        if not match:
            continue
        label = match["label"]
        dataset = dataset_of(label)
        if dataset is None or dataset in found:
            continue
        cells = {float(km): float(pct) for km, pct in _CELL.findall(match["cells"])}
        if not all(t in cells for t in (1.0, 25.0, 200.0, 750.0, 2500.0)):
            continue
        images = _IMAGES.search(label)
        found[dataset] = {"percent": [cells[t] for t in (1.0, 25.0, 200.0, 750.0, 2500.0)],
                          "images": int(images[1].replace(",", "")) if images else None,
                          "median_km": None, "mean_km": None, "curve": [],
                          "source": f"measured on the bundle and stored in its model card ({label})"}
    return found


def dataset_of(label: str) -> str | None:
    key = label.lower().replace("-", "").replace(" ", "")
    return "Im2GPS3k" if "im2gps3k" in key else "Im2GPS" if "im2gps" in key else None


def stored_evaluations(path: Path) -> dict[str, dict]:
    """Figures `evaluate --store` kept with the bundle (<bundle>/evaluations/<test set>.json), by dataset."""
    found = {}
    for file in sorted((path / "evaluations").glob("*.json")):
        try:
            figures = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        dataset = dataset_of(str(figures.get("test_set", file.stem)))
        if dataset and figures.get("percent"):
            found[dataset] = {key: figures.get(key) for key in ("percent", "images", "median_km", "mean_km", "curve",
                                                               "source")}
    return found


def _hyper_parameters(training: dict | None) -> list[str]:
    if not training:
        return ["Hyper-parameters: not recorded in the bundle (an imported or older bundle)."]
    lines = []
    for concept, net in (training.get("networks") or {}).items():
        who = "" if concept == "base" else f"ISN {concept}: "
        scale = net.get("crop_scale") or ["?", "?"]
        lines.append(f"{who}backbone {net.get('backbone')}, {net.get('epochs_trained')} of "
                     f"{net.get('epochs_planned')} epochs, {net.get('train_images') or 'an unrecorded number of'} "
                     f"training images, crops {net.get('crop_size')} px (RandomResizedCrop scale {scale[0]}-"
                     f"{scale[1]})")
    if training.get("augmentation"):
        lines.append(f"Augmentation: {training['augmentation']}")
    return lines


def bundle_card(*, name: str, path: Path, untrained: bool, active: bool, config: dict) -> dict:
    """The /models/ entry of an installed bundle."""
    try:
        markdown = (path / config.get("model_card", MODEL_CARD)).read_text(encoding="utf-8")
    except OSError:
        markdown = ""
    head, sections = _sections(markdown)
    details = [f"Kind: {config.get('kind', 'isn')}; installed bundle “{name}”"
               + (" (the active model of the upload page)" if active else "") + ".",
               f"Created {config.get('created', 'at an unrecorded time')}."]
    details += _plain(sections.pop("Architecture", []))
    parts = config.get("partitionings") or []
    if parts:
        details.append("Partitionings: " + ", ".join(f"{p.get('name')} ({p.get('cells')} cells)" for p in parts))
    training = _plain(sections.pop("Training data", [])) + _hyper_parameters(config.get("training"))
    accuracy_lines = sections.pop("Measured accuracy", [])
    evaluation = _plain(accuracy_lines)
    risks = ([UNTRAINED_RISK] if untrained else []) + RISKS
    for title, lines in sections.items():
        lowered = title.lower()
        if "untrained" in lowered:
            risks += _plain(lines)
        elif "train" in lowered:
            training += _plain(lines)
        else:
            evaluation += [f"{title}: {line}" for line in _plain(lines)]
    stored = stored_evaluations(path)
    evaluation += [f"{dataset}: {figures['source']}" for dataset, figures in stored.items()]
    accuracy = {} if untrained else {**card_accuracy(accuracy_lines), **stored}
    return {"name": name, "slug": slugify(f"bundle-{name}"), "origin": "installed bundle", "untrained": untrained,
            "details": _plain(head) + details, "intended": INTENDED_USES, "out_of_scope": OUT_OF_SCOPE,
            "risks": risks, "training": training,
            "evaluation_data": ["Im2GPS (237 photos) and Im2GPS3k (2,997 photos), Flickr photos with their "
                                "true positions; metric: share of photos whose answer lies within 1 / 25 / 200 / "
                                "750 / 2500 km (great-circle)."],
            "evaluation": evaluation or ["not measured"], "accuracy": accuracy}


def published_card(name: str, *, accuracy: dict[str, dict]) -> dict:
    """The /models/ entry of a model whose per-image answers were published by the paper's authors."""
    prediction = "f*" if "f*" in name else "m"
    details = [f"From {PAPER}; the app plays against its published per-image answers, it does not run it.",
               PAPER_MODELS.get(name, "A model of the paper."), PAPER_PREDICTION[prediction]]
    if name.startswith("base-vgg-c"):
        details.append("c: the geometric centre of the predicted cell instead of the mean of its photos.")
    details.append("Licence of the published answers: GPL-3.0 (TIBHannover/GeoEstimation results/). The authors "
                   "withdrew their code and weights in December 2025.")
    return {"name": name, "slug": slugify(f"published-{name}"), "origin": "published answers", "untrained": False,
            "details": details, "intended": INTENDED_USES, "out_of_scope": OUT_OF_SCOPE, "risks": RISKS,
            "training": PAPER_TRAINING,
            "evaluation_data": ["Im2GPS (237 photos) and Im2GPS3k (2,997 photos), Flickr photos with their "
                                "true positions; metric: share of photos whose answer lies within 1 / 25 / 200 / "
                                "750 / 2500 km (great-circle)."],
            "evaluation": [f"{dataset}: {entry['source']}" for dataset, entry in accuracy.items()]
            or ["No published figures for this model here."],
            "accuracy": accuracy}


def slugify(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")

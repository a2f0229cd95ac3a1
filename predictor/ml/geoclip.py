"""The "geoclip" model kind: GeoCLIP (Vivanco Cepeda et al., NeurIPS 2023) behind the same interface as ISN bundles.

A photo is embedded by CLIP ViT-L/14's vision tower plus a small MLP; each coordinate of a fixed GPS gallery
(100k MP-16 locations) is embedded by a location encoder: the Equal Earth projection, then random Fourier features
at several scales, each followed by an MLP, the per-scale embeddings summed. The softmax of the scaled cosine
similarities is a probability over the gallery. Here it is summed into the bundle's coarse/middle/fine cells (each
gallery point belongs to exactly one cell per partitioning, so every partitioning carries the whole mass), which is
what the heat map, partitions and hierarchy answer use; the estimate is GeoCLIP's own answer, the most probable
gallery coordinate, and the confidence the gallery mass within 25 km of it.

The model offers scene categories (the bundle's Places365 classifier, shown and used by the safeguards, not for
routing) and no activation maps: a vision transformer has no CAM.

Bundle layout (config "kind": "geoclip", "architecture": {"type": "geoclip", ...}), besides the files of every
bundle and the scene classifier's (as in predictor.ml.isn)::

    clip/vision_config.json                 transformers CLIPVisionConfig of the image tower
    weights/clip_vision.safetensors         CLIPVisionModelWithProjection state dict
    weights/geoclip_image_mlp.safetensors   image MLP ("0.*", "2.*") and "logit_scale"
    weights/geoclip_location.safetensors    location encoder ("LocEnc<i>.capsule.*", "LocEnc<i>.head.*")
    gallery/gallery.csv                     lat,lon,<class index in each partitioning>
    LICENSES.md                             GeoCLIP (MIT) and the CLIP backbone's licence

No Django here; `transformers` is imported only when a GeoCLIP model is built.
"""
from __future__ import annotations

import csv
import io
import json
import math
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn

from .bundle import (BundleError, BundleWriter, check_weight_shapes, model_card_text, read_model_card,
                     read_partitionings, require_keys, state_dict_shapes)
from .geodesy import EARTH_RADIUS_KM, coordinates_in_range
from .hierarchy import CONFIDENCE_RADIUS_KM, Hierarchy
from .isn import (SceneClassifier, check_scene_weights, load_scene_classifier, scene_classifier_untrained,
                  write_scene_classifier)
from .model import CROP_INPUT, PHOTO_INPUT, ModelKind, ModelOutput, Runner, ServedNetwork
from .network import GeoNetwork
from .partitions import MIN_LEVEL, Partitioning, leaf_cell, tiny_partitionings
from .preprocess import IMAGENET_MEAN, IMAGENET_STD, CropSpec
from .scenes import SceneMapping

KIND = ARCHITECTURE = "geoclip"
GALLERY = "gallery"  # Prediction.argmax key of the best gallery point (the estimate)
WHEEL_NAME = "geoclip-1.3.0-py3-none-any.whl"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# CLIP's own preprocessing: shorter side to 224, one centre crop of 224.
CROPS = CropSpec(mode="center", resize=224, size=224, aggregation="mean")
FILES = {
    "vision_config": "clip/vision_config.json",
    "vision": "weights/clip_vision.safetensors",
    "image_mlp": "weights/geoclip_image_mlp.safetensors",
    "location": "weights/geoclip_location.safetensors",
    "gallery": "gallery/gallery.csv",
    "licences": "LICENSES.md",
}
GEOCLIP_LICENCE = {"component": "GeoCLIP location encoder, image MLP, logit scale and GPS gallery",
                   "source": "PyPI geoclip 1.3.0 (https://github.com/VicenteVivan/geo-clip)", "licence": "MIT"}
CLIP_LICENCE = {"component": "CLIP ViT-L/14 vision tower", "source": "openai/clip-vit-large-patch14",
                "licence": "MIT (OpenAI CLIP repository and model card)"}
_LOCENC_KEY = re.compile(r"^LocEnc(\d+)\.")
# Equal Earth projection (Šavrič, Patterson, Jenny 2018) coefficients, and GeoCLIP's scale of its output.
_EE = (1.340264, -0.081106, 0.000893, 0.003796)
_EE_SCALE = 66.50336


class GeoCLIPError(ValueError):
    """GeoCLIP weights, wheel, gallery or CLIP copy missing or not what the bundle needs."""


# --- the networks -----------------------------------------------------------------------------------------------

def equal_earth(latlon: torch.Tensor) -> torch.Tensor:
    """[N, 2] degrees (lat, lon) -> [N, 2] Equal Earth (x, y), scaled as GeoCLIP's encoder expects."""
    lat, lon = torch.deg2rad(latlon[:, 0]), torch.deg2rad(latlon[:, 1])
    theta = torch.asin(math.sqrt(3.0) / 2 * torch.sin(lat))
    a1, a2, a3, a4 = _EE
    x = 2 * math.sqrt(3.0) * lon * torch.cos(theta) / (
        3 * (9 * a4 * theta ** 8 + 7 * a3 * theta ** 6 + 3 * a2 * theta ** 2 + a1))
    y = a4 * theta ** 9 + a3 * theta ** 7 + a2 * theta ** 3 + a1 * theta
    return torch.stack((x, y), dim=1) * _EE_SCALE / 180


class FourierFeatures(nn.Module):
    """gamma(v) = [cos(2 pi B v), sin(2 pi B v)] with a fixed Gaussian matrix B [m, 2] (stored in the weights)."""

    def __init__(self, frequencies: int, inputs: int = 2):
        super().__init__()
        self.b = nn.Parameter(torch.zeros(frequencies, inputs), requires_grad=False)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        projected = 2 * math.pi * v @ self.b.T
        return torch.cat((torch.cos(projected), torch.sin(projected)), dim=-1)


class LocationBranch(nn.Module):
    """One scale: Fourier features, three ReLU layers, a linear head to the shared embedding."""

    def __init__(self, frequencies: int, hidden: int, embedding: int):
        super().__init__()
        self.capsule = nn.Sequential(FourierFeatures(frequencies), nn.Linear(2 * frequencies, hidden), nn.ReLU(),
                                     nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.head = nn.Sequential(nn.Linear(hidden, embedding))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.capsule(x))


class LocationEncoder(nn.Module):
    """Sum of `branches` LocationBranch outputs over the Equal Earth projection of (lat, lon)."""

    def __init__(self, branches: int = 3, frequencies: int = 256, hidden: int = 1024, embedding: int = 512):
        super().__init__()
        self.branches = branches
        self.embedding = embedding
        for i in range(branches):
            self.add_module(f"LocEnc{i}", LocationBranch(frequencies, hidden, embedding))

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> "LocationEncoder":
        """Infer the sizes from the weights' keys and shapes, then load them (strict)."""
        indices = sorted({int(m.group(1)) for k in state if (m := _LOCENC_KEY.match(k))})
        if not indices or indices != list(range(len(indices))):
            raise GeoCLIPError("location encoder weights: no LocEnc0.. branches found")
        try:
            frequencies = state["LocEnc0.capsule.0.b"].shape[0]
            hidden = state["LocEnc0.capsule.1.weight"].shape[0]
            embedding = state["LocEnc0.head.0.weight"].shape[0]
        except KeyError as error:
            raise GeoCLIPError(f"location encoder weights: missing {error}") from None
        encoder = cls(len(indices), frequencies, hidden, embedding)
        try:
            encoder.load_state_dict(state)
        except RuntimeError as error:
            raise GeoCLIPError(f"location encoder weights do not fit: {error}") from None
        return encoder

    def forward(self, latlon: torch.Tensor) -> torch.Tensor:
        projected = equal_earth(latlon)
        return sum(self._modules[f"LocEnc{i}"](projected) for i in range(self.branches))


def image_mlp(width: int = 768, embedding: int = 512) -> nn.Sequential:
    return nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, embedding))


def build_vision_tower(config: dict) -> nn.Module:
    """A randomly initialised CLIPVisionModelWithProjection from a CLIPVisionConfig dict."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    return CLIPVisionModelWithProjection(CLIPVisionConfig(**config))


class ImageTower(nn.Module):
    """ImageNet-normalised 224x224 crops -> GeoCLIP image embeddings [N, 512] (returned as a one-item list)."""

    def __init__(self, vision: nn.Module, mlp: nn.Sequential):
        super().__init__()
        self.vision = vision
        self.mlp = mlp
        imagenet_mean, imagenet_std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
        clip_mean, clip_std = torch.tensor(CLIP_MEAN), torch.tensor(CLIP_STD)
        # x_clip = (x * s_in + m_in - m_clip) / s_clip: the crops arrive normalised for the scene network.
        self.register_buffer("renorm_scale", (imagenet_std / clip_std).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("renorm_shift", ((imagenet_mean - clip_mean) / clip_std).view(1, 3, 1, 1),
                             persistent=False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        pixels = x * self.renorm_scale.to(x.dtype) + self.renorm_shift.to(x.dtype)
        embeds = self.vision(pixel_values=pixels).image_embeds
        return [self.mlp(embeds)]


@dataclass(eq=False)
class GeoCLIPModel:
    """A loaded GeoCLIP bundle (a `predictor.ml.model.GeoModel` with scene categories, without activation maps)."""

    name: str
    untrained: bool
    partitionings: list[Partitioning]
    config: dict
    tower: ImageTower
    location: LocationEncoder
    logit_scale: torch.Tensor
    gallery: torch.Tensor  # [G, 2] float32 (lat, lon)
    assignment: torch.Tensor  # [G, P] long: class index of each gallery point in each partitioning
    scene: SceneClassifier
    hierarchy: Hierarchy
    crops: CropSpec = CROPS
    model_card: str = ""
    path: Path | None = None
    scene_mapping: object = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    _gallery_features: torch.Tensor | None = field(default=None, repr=False)

    kind = KIND

    @property
    def partitioning_names(self) -> list[str]:
        return [p.name for p in self.partitionings]

    @property
    def scene_untrained(self) -> bool:
        """The Places365 classifier has random weights (the scene shown and the indoor safeguard mean nothing),
        even when the image tower is trained."""
        return self.untrained or scene_classifier_untrained(self.config)

    @property
    def scene_labels(self) -> list[str]:
        return self.scene.labels

    def served_networks(self) -> list[ServedNetwork]:
        return [ServedNetwork(self.scene.network, PHOTO_INPUT), ServedNetwork(self.tower, CROP_INPUT)]

    def to(self, device: str | torch.device) -> "GeoCLIPModel":
        device = torch.device(device)
        if device != self.device:
            self._gallery_features = None
        self.device = device
        for module in (self.tower, self.location, self.scene):
            module.to(device).eval()
        self.logit_scale = self.logit_scale.to(device)
        self.gallery = self.gallery.to(device)
        self.assignment = self.assignment.to(device)
        return self

    @torch.inference_mode()
    def gallery_features(self, chunk: int = 8192) -> torch.Tensor:
        """Unit-norm location embeddings of the whole gallery [G, D], float32, computed once per device."""
        if self._gallery_features is None:
            with torch.autocast(device_type=self.device.type, enabled=False):
                parts = [F.normalize(self.location(self.gallery[i:i + chunk].float()), dim=1)
                         for i in range(0, self.gallery.shape[0], chunk)]
            self._gallery_features = torch.cat(parts)
        return self._gallery_features

    @torch.inference_mode()
    def gallery_probabilities(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Image embeddings [N, D] -> probabilities over the gallery [N, G] (float32)."""
        with torch.autocast(device_type=self.device.type, enabled=False):
            image = F.normalize(embeddings.float(), dim=1)
            logits = self.logit_scale.float().exp() * image @ self.gallery_features().T
            return torch.softmax(logits, dim=1)

    @torch.inference_mode()
    def infer(self, crops: torch.Tensor, scene_inputs: torch.Tensor, *, run: Runner | None = None) -> ModelOutput:
        """One centre crop per photo [N, 3, 224, 224] and scene inputs [N, 3, S, S], ImageNet-normalised.

        The estimate is the most probable gallery coordinate, its confidence the gallery mass within 25 km of it.
        """
        if crops.shape[0] != scene_inputs.shape[0]:
            raise ValueError(f"{crops.shape[0]} crops for {scene_inputs.shape[0]} photos with 1 crop each")
        p365, s3 = self.scene.classify(scene_inputs, run)
        run = run or (lambda network, x: network(x))
        probabilities = self.gallery_probabilities(run(self.tower, crops)[0])
        n = probabilities.shape[0]
        aggregated = [torch.zeros((n, len(p)), dtype=torch.float32, device=probabilities.device)
                      .index_add_(1, self.assignment[:, level], probabilities)
                      for level, p in enumerate(self.partitionings)]
        best = probabilities.argmax(dim=1)
        distance = _great_circle_km(self.gallery[best][:, None, :], self.gallery[None, :, :])
        confidence = (probabilities * (distance <= CONFIDENCE_RADIUS_KM)).sum(dim=1).clamp(0.0, 1.0)
        return ModelOutput(s3=s3, concepts=s3.argmax(dim=1), probabilities=aggregated, scene_probabilities=p365,
                           estimate=self.gallery[best], estimate_confidence=confidence,
                           points={GALLERY: self.gallery[best]})

    def gallery_top(self, probabilities: torch.Tensor, k: int) -> list[list[tuple[float, float, float]]]:
        """Top-k gallery coordinates per photo as (lat, lon, probability), best first."""
        values, indices = torch.topk(probabilities, min(k, probabilities.shape[1]), dim=1)
        coords = self.gallery[indices].cpu().tolist()
        return [[(float(c[0]), float(c[1]), float(v)) for c, v in zip(row_c, row_v)]
                for row_c, row_v in zip(coords, values.cpu().tolist())]


def _great_circle_km(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Broadcast great-circle distance between (..., 2) degree tensors."""
    lat1, lon1 = torch.deg2rad(a[..., 0]), torch.deg2rad(a[..., 1])
    lat2, lon2 = torch.deg2rad(b[..., 0]), torch.deg2rad(b[..., 1])
    h = torch.sin((lat2 - lat1) / 2) ** 2 + torch.cos(lat1) * torch.cos(lat2) * torch.sin((lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_KM * torch.asin(torch.sqrt(h.clamp(0.0, 1.0)))


# --- gallery -> cells ---------------------------------------------------------------------------------------------

def assign_gallery(lat: np.ndarray, lon: np.ndarray, partitionings: list[Partitioning]) -> np.ndarray:
    """[G, P] class index of each gallery point in each partitioning.

    A point lies in the cell that contains it; a point outside every cell of a partitioning (partitionings cover
    only where training photos were) goes to the cell with the nearest mean coordinate, so no mass is lost.
    """
    lat, lon = np.asarray(lat, dtype=np.float64), np.asarray(lon, dtype=np.float64)
    out = np.full((len(lat), len(partitionings)), -1, dtype=np.int64)
    levels = [sorted({int(v) for v in p.levels}, reverse=True) for p in partitionings]
    all_levels = sorted({lv for ls in levels for lv in ls}, reverse=True)
    for g in range(len(lat)):
        leaf = leaf_cell(lat[g], lon[g])
        tokens = {level: leaf.parent(level).to_token() for level in all_levels if level >= MIN_LEVEL}
        for p, partitioning in enumerate(partitionings):
            for level in levels[p]:
                index = partitioning.index_of(tokens[level]) if level in tokens else None
                if index is not None:
                    out[g, p] = index
                    break
    for p, partitioning in enumerate(partitionings):
        missing = np.nonzero(out[:, p] < 0)[0]
        if len(missing):
            distance = _great_circle_km(torch.as_tensor(np.stack([lat[missing], lon[missing]], 1))[:, None, :],
                                        torch.as_tensor(np.stack([partitioning.lat, partitioning.lon], 1))[None])
            out[missing, p] = distance.argmin(dim=1).numpy()
    return out


def read_gallery_csv(text: str) -> tuple[np.ndarray, np.ndarray]:
    """GeoCLIP's gallery CSV (header LAT,LON) -> (lat, lon)."""
    rows = list(csv.reader(io.StringIO(text)))
    if not rows or [c.strip().upper() for c in rows[0][:2]] != ["LAT", "LON"]:
        raise GeoCLIPError("gallery CSV: expected a LAT,LON header")
    try:
        values = np.array([[float(r[0]), float(r[1])] for r in rows[1:] if r], dtype=np.float64)
    except (ValueError, IndexError) as error:
        raise GeoCLIPError(f"gallery CSV: bad row ({error})") from None
    if len(values) == 0 or not coordinates_in_range(values[:, 0], values[:, 1]).all():
        raise GeoCLIPError("gallery CSV: empty or coordinates out of range")
    return values[:, 0], values[:, 1]


# --- the geoclip wheel as a data source ---------------------------------------------------------------------------

@dataclass
class GeoCLIPRelease:
    location: dict[str, torch.Tensor]
    image_mlp: dict[str, torch.Tensor]
    logit_scale: torch.Tensor
    gallery_lat: np.ndarray
    gallery_lon: np.ndarray
    licence_text: str
    source: str


def read_wheel(path: str | Path) -> GeoCLIPRelease:
    """The trained parts of GeoCLIP from its PyPI wheel, without installing or importing the package.

    The .pth files are torch pickles: read with `weights_only=True` (tensors and plain containers only).
    """
    path = Path(path)
    if not path.is_file():
        raise GeoCLIPError(f"{path}: no such file (get it with `pip download --no-deps geoclip==1.3.0`)")
    try:
        with zipfile.ZipFile(path) as wheel:
            names = wheel.namelist()

            def member(suffix: str) -> bytes:
                found = [n for n in names if n.endswith(suffix)]
                if not found:
                    raise GeoCLIPError(f"{path.name}: no {suffix} inside")
                return wheel.read(found[0])

            def tensors(suffix: str):
                return torch.load(io.BytesIO(member(suffix)), map_location="cpu", weights_only=True)

            location = tensors("model/weights/location_encoder_weights.pth")
            mlp = tensors("model/weights/image_encoder_mlp_weights.pth")
            scale = tensors("model/weights/logit_scale_weights.pth")
            lat, lon = read_gallery_csv(member("model/gps_gallery/coordinates_100K.csv").decode("utf-8"))
            licence = member("licenses/LICENSE").decode("utf-8")
    except (zipfile.BadZipFile, OSError) as error:
        raise GeoCLIPError(f"{path}: not a readable wheel ({error})") from None
    except Exception as error:  # weights_only refusals and malformed pickles
        if isinstance(error, GeoCLIPError):
            raise
        raise GeoCLIPError(f"{path}: cannot read GeoCLIP weights safely ({error})") from None
    if not isinstance(location, dict) or not isinstance(mlp, dict) or not torch.is_tensor(scale):
        raise GeoCLIPError(f"{path}: weights are not plain state dicts")
    return GeoCLIPRelease(location=location, image_mlp=mlp, logit_scale=scale.detach().float().reshape(()),
                          gallery_lat=lat, gallery_lon=lon, licence_text=licence, source=path.name)


# --- bundles --------------------------------------------------------------------------------------------------------

def save_geoclip_bundle(path: str | Path, *, name: str, release: GeoCLIPRelease, vision_config: dict,
                        vision_state: dict[str, torch.Tensor], partitionings: list[Partitioning],
                        scene_network: GeoNetwork, scene_mapping, clip_source: str, untrained: bool = False,
                        notes: str = "", gallery_every: int = 1, overwrite: bool = False,
                        scene_untrained: bool = False) -> Path:
    """Write a GeoCLIP bundle (see the module docstring). `gallery_every` > 1 keeps every n-th gallery point;
    `scene_untrained` marks a random scene classifier beside the trained GeoCLIP weights."""
    # Check every part fits before writing anything.
    location = LocationEncoder.from_state_dict(release.location)
    tower = ImageTower(build_vision_tower(vision_config), image_mlp())
    try:
        tower.vision.load_state_dict(vision_state)
        tower.mlp.load_state_dict(release.image_mlp)
    except RuntimeError as error:
        raise GeoCLIPError(f"CLIP vision tower or image MLP weights do not fit: {error}") from None
    if tower.vision.config.projection_dim != tower.mlp[0].in_features or tower.vision.config.image_size != 224:
        raise GeoCLIPError("the CLIP vision tower must take 224x224 images and project to the image MLP's width "
                           f"({tower.mlp[0].in_features})")
    lat, lon = release.gallery_lat[::gallery_every], release.gallery_lon[::gallery_every]
    with BundleWriter(path, name=name, overwrite=overwrite) as writer:
        entries = writer.write_partitionings(partitionings)
        names = [e["name"] for e in entries]
        assignment = assign_gallery(lat, lon, partitionings)
        writer.write_text(FILES["vision_config"], json.dumps(vision_config, indent=2) + "\n")
        writer.save_tensors(FILES["vision"], vision_state)
        writer.save_tensors(FILES["image_mlp"], {**release.image_mlp,
                                                 "logit_scale": release.logit_scale.reshape(1)})
        writer.save_tensors(FILES["location"], release.location)
        with writer.file(FILES["gallery"]).open("w", encoding="utf-8", newline="") as handle:
            table = csv.writer(handle, lineterminator="\n")
            table.writerow(["lat", "lon", *names])
            for g in range(len(lat)):
                table.writerow([repr(float(lat[g])), repr(float(lon[g])), *assignment[g].tolist()])
        scene_untrained = untrained or scene_untrained
        scene = write_scene_classifier(writer, scene_network, scene_mapping, untrained=scene_untrained)
        licences = [dict(GEOCLIP_LICENCE), dict(CLIP_LICENCE, source=clip_source)]
        writer.write_text(FILES["licences"], "# Licences\n\n" + "\n".join(
            f"- {e['component']}: {e['licence']} (from {e['source']})" for e in licences)
            + "\n\n## GeoCLIP licence text\n\n" + release.licence_text.strip() + "\n")
        architecture = [
            f"- GeoCLIP (Vivanco Cepeda et al., NeurIPS 2023): CLIP vision tower ({clip_source}) + image MLP, "
            f"location encoder with {location.branches} Fourier-feature scales, GPS gallery of {len(lat):,} MP-16 "
            "coordinates",
            f"- Gallery probabilities summed into "
            f"{', '.join(f'{n} ({len(p)} cells)' for n, p in zip(names, partitionings))}",
            f"- Scene classifier: {scene_network.backbone} Places365 (365 classes) -> S3 (shown, not used for routing)"
            + ("; UNTRAINED (random weights): the scene shown for a photo means nothing" if scene_untrained else "")]
        card = model_card_text(
            name, untrained=untrained, config_input=CROPS.to_config(), architecture=architecture,
            untrained_note="the image tower has random weights; predictions are meaningless.",
            card={"training_data": "GeoCLIP's released location encoder, image MLP and gallery (trained on MP-16 "
                                   f"by its authors); vision tower: {clip_source}",
                  "accuracy": "not measured here", "notes": notes},
            sections=[("Published accuracy (GeoCLIP paper, Im2GPS3k)",
                       ["- 1 km: 14.1%, 25 km: 34.5%, 200 km: 50.7%, 750 km: 69.7%, 2500 km: 83.8% "
                        "(not measured here)"]),
                      ("Licences", [f"- {e['component']}: {e['licence']}" for e in licences])])
        fields = {"architecture": {"type": ARCHITECTURE, "backbone": "clip-vit",
                                   "num_classes": [len(p) for p in partitionings], "routing": "gallery",
                                   "gallery_size": int(len(lat)), "files": dict(FILES)},
                  "concepts": [], "networks": {}, "scene": scene, "licences": licences}
        return writer.finish(kind=KIND, untrained=untrained, crops=CROPS, partitionings=entries, card=card,
                             **fields)


def _vision_config(path: Path, config: dict) -> dict:
    try:
        return json.loads((path / config["architecture"]["files"]["vision_config"]).read_text(encoding="utf-8"))
    except (OSError, ValueError, KeyError) as error:
        raise BundleError(f"{path}: bad CLIP vision config ({error})") from None


def _validate(path: Path, config: dict) -> list[str]:
    """The GeoCLIP files named in config.json's architecture, and the scene classifier's."""
    require_keys(path / "config.json", config, ("architecture", "scene"))
    files = config["architecture"].get("files") if isinstance(config["architecture"], dict) else None
    if not isinstance(files, dict):
        raise BundleError(f"{path}: config.json's architecture lists no GeoCLIP files")
    for key in FILES:
        if key not in files:
            raise BundleError(f"{path}: GeoCLIP file {key!r} is missing from config.json's architecture")
    try:
        num_classes = [int(n) for n in config["architecture"]["num_classes"]]
    except (KeyError, TypeError, ValueError):
        raise BundleError(f"{path}: config.json's architecture has no list of cell counts") from None
    if [int(p["cells"]) for p in config["partitionings"]] != num_classes:
        raise BundleError(f"{path}: partitioning sizes {[p['cells'] for p in config['partitionings']]} do not "
                          f"match the architecture's {num_classes}")
    try:
        return [files[key] for key in FILES] + [config["scene"]["weights"], config["scene"]["mapping"]]
    except (KeyError, TypeError) as error:
        raise BundleError(f"{path}: malformed scene entry in config.json ({error})") from None


def _check_weights(path: Path, config: dict) -> None:
    """Every GeoCLIP weight file has the tensors the model needs."""
    files = config["architecture"]["files"]
    try:
        with torch.device("meta"):
            vision = build_vision_tower(_vision_config(path, config))
        check_weight_shapes(path, files["vision"], state_dict_shapes(vision))
        mlp_shapes = state_dict_shapes(image_mlp(vision.config.projection_dim))
        check_weight_shapes(path, files["image_mlp"], {**mlp_shapes, "logit_scale": (1,)})
        with safe_open(str(path / files["location"]), framework="pt") as handle:
            keys = set(handle.keys())
        branches = len({k.split(".")[0] for k in keys if _LOCENC_KEY.match(k)})
        with torch.device("meta"):
            location = LocationEncoder(branches=max(branches, 1))
        check_weight_shapes(path, files["location"], state_dict_shapes(location))
    except (ValueError, TypeError) as error:
        raise BundleError(f"{path}: {error}") from None
    check_scene_weights(path, config)


def load_geoclip_bundle(path: Path, config: dict) -> GeoCLIPModel:
    """Build the model of a verified GeoCLIP bundle directory (on the CPU)."""
    files = config["architecture"]["files"]
    try:
        partitionings = read_partitionings(path, config)
        tower = ImageTower(build_vision_tower(_vision_config(path, config)), image_mlp())
        tower.vision.load_state_dict(load_file(str(path / files["vision"])))
        mlp_state = load_file(str(path / files["image_mlp"]))
        logit_scale = mlp_state.pop("logit_scale").reshape(())
        tower.mlp.load_state_dict(mlp_state)
        location = LocationEncoder.from_state_dict(load_file(str(path / files["location"])))
        with (path / files["gallery"]).open(encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
        if rows[0][2:] != [p.name for p in partitionings]:
            raise BundleError(f"{files['gallery']}: columns {rows[0]} do not name the partitionings")
        table = np.array(rows[1:], dtype=np.float64)
        assignment = table[:, 2:].astype(np.int64)
        sizes = np.array([len(p) for p in partitionings])
        if len(table) == 0 or (assignment < 0).any() or (assignment >= sizes[None, :]).any():
            raise BundleError(f"{files['gallery']}: empty, or a class index outside its partitioning")
        scene, mapping = load_scene_classifier(path, config)
    except BundleError:
        raise
    except (ValueError, RuntimeError, KeyError, OSError, IndexError) as error:
        raise BundleError(f"{path}: cannot load GeoCLIP bundle: {error}") from None
    return GeoCLIPModel(
        name=config["name"], untrained=bool(config.get("untrained", False)), partitionings=partitionings,
        config=config, tower=tower, location=location, logit_scale=logit_scale,
        gallery=torch.as_tensor(table[:, :2], dtype=torch.float32), assignment=torch.as_tensor(assignment),
        scene=scene, hierarchy=Hierarchy(partitionings), crops=CropSpec.from_config(config["input"]),
        model_card=read_model_card(path, config), path=path, scene_mapping=mapping)


def _summary(config: dict) -> str:
    arch = config.get("architecture", {})
    cells = "/".join(str(n) for n in arch.get("num_classes", []))
    return f"GeoCLIP, gallery of {arch.get('gallery_size', '?'):,} points, cells {cells}"


GEOCLIP_KIND = ModelKind(name=KIND, validate=_validate, check_weights=_check_weights, load=load_geoclip_bundle,
                         summary=_summary)


# --- a tiny bundle for tests ------------------------------------------------------------------------------------------

TINY_VISION_CONFIG = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                      "patch_size": 32, "image_size": 224, "projection_dim": 768}


def make_tiny_geoclip_bundle(path: str | Path, *, wheel: str | Path, partitionings: list[Partitioning] | None = None,
                             gallery_every: int = 200, seed: int = 0, name: str = "geoclip-tiny") -> Path:
    """GeoCLIP's real location encoder, image MLP and (every n-th) gallery point with a tiny random CLIP tower."""

    release = read_wheel(wheel)
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        vision = build_vision_tower(TINY_VISION_CONFIG)
        scene_network = GeoNetwork("tiny", [365])
    finally:
        torch.random.set_rng_state(state)
    return save_geoclip_bundle(
        path, name=name, release=release, vision_config=TINY_VISION_CONFIG, vision_state=vision.state_dict(),
        partitionings=partitionings or tiny_partitionings(seed), scene_network=scene_network,
        scene_mapping=SceneMapping.load_default(), clip_source="random tiny CLIP vision tower (tests)",
        untrained=True, gallery_every=gallery_every, overwrite=True,
        notes="Test bundle: random tiny image tower and scene classifier, real GeoCLIP location encoder.")


# --- building the real bundle ------------------------------------------------------------------------------------------

CLIP_REPO = "openai/clip-vit-large-patch14"
_CONFIG_NOISE = ("transformers_version", "architectures", "model_type", "_name_or_path", "torch_dtype", "dtype",
                 "id2label", "label2id", "return_dict", "output_hidden_states", "output_attentions")


def read_clip_vision(clip_dir: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """(vision config dict, vision tower state dict) from a local copy of a CLIP repository (safetensors only)."""
    from transformers import CLIPVisionModelWithProjection

    clip_dir = Path(clip_dir)
    if not (clip_dir / "config.json").is_file():
        raise GeoCLIPError(f"{clip_dir}: no config.json (expected a copy of the {CLIP_REPO} repository)")
    if not any(clip_dir.glob("*.safetensors")):
        raise GeoCLIPError(f"{clip_dir}: no .safetensors weights (pickled .bin weights are not read)")
    try:
        vision, info = CLIPVisionModelWithProjection.from_pretrained(
            clip_dir, use_safetensors=True, local_files_only=True, output_loading_info=True)
    except (OSError, ValueError, RuntimeError) as error:
        raise GeoCLIPError(f"{clip_dir}: cannot read the CLIP vision tower ({error})") from None
    missing = sorted(info.get("missing_keys") or [])
    if missing:  # from_pretrained would leave these randomly initialised
        raise GeoCLIPError(f"{clip_dir}: the weights lack {len(missing)} vision tensors, e.g. {missing[:3]}")
    config = {k: v for k, v in vision.config.to_dict().items() if k not in _CONFIG_NOISE}
    return config, {k: v.detach().float() for k, v in vision.state_dict().items()}


def download_clip(into: str | Path, repo: str = CLIP_REPO) -> Path:
    """Download the CLIP repository's config and safetensors weights (only `install_model geoclip` calls this)."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo, local_dir=str(into),
                                      allow_patterns=["config.json", "model.safetensors", "README.md", "LICENSE*"]))
    except Exception as error:  # network, authentication, missing repository: all end the command plainly
        raise GeoCLIPError(f"downloading {repo} from the Hugging Face hub failed: {error}") from None


def build_geoclip_bundle(path: str | Path, *, wheel: str | Path, clip_dir: str | Path, clip_source: str,
                         partitionings: list[Partitioning], scene_network: GeoNetwork, scene_mapping,
                         scene_note: str = "", scene_untrained: bool = False, name: str = "geoclip",
                         overwrite: bool = False) -> Path:
    """The servable GeoCLIP bundle: wheel weights and whole gallery, CLIP vision tower from `clip_dir`."""
    release = read_wheel(wheel)
    vision_config, vision_state = read_clip_vision(clip_dir)
    return save_geoclip_bundle(path, name=name, release=release, vision_config=vision_config,
                               vision_state=vision_state, partitionings=partitionings, scene_network=scene_network,
                               scene_mapping=scene_mapping, clip_source=clip_source, untrained=False,
                               notes=scene_note, overwrite=overwrite, scene_untrained=scene_untrained)

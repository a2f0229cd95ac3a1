"""A model kind for the tests, written the way a new kind is added (docs/predictor.md, "How to add a model kind"):
this one module, plus one `predictor.ml.kinds.register_kind(KIND)` line. Nothing in the engine, the upload stream
or the commands knows it.

Nothing is trained: the model answers from the photo's colour. Each fine cell has a reference colour (stored in the
bundle); the softmax of minus the squared distance between a crop's mean colour and each reference is the crop's
fine-cell probability, and coarser cells carry the mass of their fine cells. It offers attention maps (where it
"looked": the brightness of the photo) and retrieval refinement (the medoid of the bundle's background photos inside
the f* cell), and no activation maps or scene categories. Its scene is always urban. Like a segmentation network, it
returns a map over the whole photo: where it is red.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn

from predictor.ml.bundle import (BundleError, BundleWriter, check_weight_shapes, model_card_text, read_model_card,
                                 read_partitionings, require_keys)
from predictor.ml.cam import class_activation_maps
from predictor.ml.geodesy import great_circle_km
from predictor.ml.hierarchy import Hierarchy, HierarchyOutput
from predictor.ml.model import CROP_INPUT, ModelKind, ModelOutput, Runner, ServedNetwork
from predictor.ml.partitions import Partitioning
from predictor.ml.prediction import Refined
from predictor.ml.preprocess import IMAGENET_MEAN, IMAGENET_STD, CropGeometry, CropSpec, aggregate_crops

KIND = "colour-test"
COLOURS = "weights/colours.safetensors"
BACKGROUND = "background/points.csv"
URBAN = torch.tensor([0.05, 0.05, 0.9])


def _rgb(crops: torch.Tensor) -> torch.Tensor:
    """ImageNet-normalised crops -> pixel values in 0..1."""
    mean = torch.tensor(IMAGENET_MEAN, device=crops.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=crops.device).view(1, 3, 1, 1)
    return crops.float() * std + mean


class ColourNet(nn.Module):
    """Crops [R, 3, s, s] -> [fine-cell logits [R, n_fine]]: minus the scaled squared colour distance."""

    def __init__(self, colours: torch.Tensor, sharpness: float = 50.0):
        super().__init__()
        self.register_buffer("colours", colours.float())
        self.sharpness = sharpness

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        rgb = _rgb(x).mean(dim=(2, 3))
        return [-self.sharpness * ((rgb[:, None, :] - self.colours[None]) ** 2).sum(dim=-1)]


@dataclass(eq=False)
class ColourModel:
    name: str
    untrained: bool
    partitionings: list[Partitioning]
    config: dict
    net: ColourNet
    background: dict[int, np.ndarray]  # fine class index -> [n, 2] (lat, lon) of background photos
    hierarchy: Hierarchy
    crops: CropSpec = field(default_factory=CropSpec)
    model_card: str = ""
    path: Path | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    kind = KIND

    @property
    def partitioning_names(self) -> list[str]:
        return [p.name for p in self.partitionings]

    @property
    def scene_untrained(self) -> bool:
        # Its scene is a constant, not a classifier's answer: as meaningless as an untrained one.
        return True

    def to(self, device):
        self.device = torch.device(device)
        self.net.to(self.device).eval()
        return self

    def served_networks(self) -> list[ServedNetwork]:
        return [ServedNetwork(self.net, CROP_INPUT)]

    @torch.inference_mode()
    def infer(self, crops: torch.Tensor, scene_inputs: torch.Tensor, *, run: Runner | None = None) -> ModelOutput:
        run = run or (lambda network, x: network(x))
        k = self.crops.num_crops
        fine = aggregate_crops(torch.softmax(run(self.net, crops)[0].float(), dim=1), k, self.crops.aggregation)
        parents = self.hierarchy.parents.to(fine.device)
        probabilities = [torch.zeros((fine.shape[0], len(p)), device=fine.device).index_add_(1, parents[:, level], fine)
                         for level, p in enumerate(self.partitionings)]
        s3 = URBAN.to(fine.device).expand(fine.shape[0], 3)
        # Its stand-in for a segmentation: where the whole photo is red.
        rgb = _rgb(scene_inputs)
        red = (rgb[:, 0] > 0.5) & (rgb[:, 1] < 0.3) & (rgb[:, 2] < 0.3)
        return ModelOutput(s3=s3, concepts=s3.argmax(dim=1), probabilities=probabilities,
                           overlays={"red": red.to(torch.uint8)})

    def attention_map(self, crops: torch.Tensor, *, geometry: CropGeometry) -> np.ndarray:
        """Brightness of each crop, pasted over the photo like a CAM."""
        return class_activation_maps(_rgb(crops), torch.full((1, 3), 1 / 3), geometry)[0]

    def refine(self, output: ModelOutput, decoded: HierarchyOutput) -> list[Refined | None]:
        fine = self.partitionings[-1]
        refined = []
        for row in range(len(decoded.hierarchy_argmax)):
            cell = int(decoded.hierarchy_argmax[row])
            points = self.background.get(cell)
            if points is None:
                refined.append(None)
                continue
            spread = great_circle_km(points[:, None, 0], points[:, None, 1], points[None, :, 0], points[None, :, 1])
            lat, lon = points[int(np.argmin(spread.sum(axis=1)))]
            refined.append(Refined(lat=float(lat), lon=float(lon), score=min(1.0, len(points) / 10),
                                   localizable=len(points) >= 3,
                                   note=f"medoid of {len(points)} background photos in cell {fine.tokens[cell]}"))
        return refined


def save_colour_bundle(path: Path, *, name: str, partitionings: list[Partitioning], colours: torch.Tensor,
                       background: list[tuple[float, float, int]], overwrite: bool = False) -> Path:
    """colours: [n_fine, 3] in 0..1; background: (lat, lon, fine class index) of each background photo."""
    if tuple(colours.shape) != (len(partitionings[-1]), 3):
        raise BundleError(f"{len(partitionings[-1])} fine cells need {len(partitionings[-1])} colours")
    crops = CropSpec()
    with BundleWriter(path, name=name, overwrite=overwrite) as writer:
        entries = writer.write_partitionings(partitionings)
        writer.save_tensors(COLOURS, {"colours": colours.float()})
        with writer.file(BACKGROUND).open("w", encoding="utf-8", newline="") as handle:
            table = csv.writer(handle, lineterminator="\n")
            table.writerow(["lat", "lon", "fine"])
            table.writerows(background)
        card = model_card_text(name, untrained=True, card={"training_data": "none: colours chosen by the test"},
                               config_input=crops.to_config(), architecture=["- Mean colour -> nearest cell colour"])
        return writer.finish(kind=KIND, untrained=True, crops=crops, partitionings=entries, card=card,
                             colours=COLOURS, background=BACKGROUND)


def _validate(path: Path, config: dict) -> list[str]:
    require_keys(path / "config.json", config, ("colours", "background"))
    return [config["colours"], config["background"]]


def _check_weights(path: Path, config: dict) -> None:
    check_weight_shapes(path, config["colours"], {"colours": (int(config["partitionings"][-1]["cells"]), 3)})


def load_colour_bundle(path: Path, config: dict) -> ColourModel:
    partitionings = read_partitionings(path, config)
    background: dict[int, list] = {}
    with (path / config["background"]).open(encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            background.setdefault(int(row["fine"]), []).append((float(row["lat"]), float(row["lon"])))
    return ColourModel(name=config["name"], untrained=True, partitionings=partitionings, config=config,
                       net=ColourNet(load_file(str(path / config["colours"]))["colours"]),
                       background={cell: np.array(points) for cell, points in background.items()},
                       hierarchy=Hierarchy(partitionings), crops=CropSpec.from_config(config["input"]),
                       model_card=read_model_card(path, config), path=path)


KIND_SPEC = ModelKind(name=KIND, validate=_validate, check_weights=_check_weights, load=load_colour_bundle,
                      summary=lambda config: "mean colour -> cell")

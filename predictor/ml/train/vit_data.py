"""What training the multi-task ViT adds to the data: scene targets per image and transforms that crop a photo and
its segmentation map together.

Scene targets come from a `label_scenes` CSV (argmax of p_indoor / p_natural / p_urban: 3 classes) or from the
Im2GPS / MP-16 metadata CSVs users have (`IMG_ID`, `S3_Label`, `S16_Label`, `S365_Label` columns, GeoEstimation's
`*_places365.csv`). S16 labels line up with S3 as 0-5 indoor, 6-9 natural, 10-15 urban; S365 labels map onto S3 by
GeoWeb's Places365 matrix (predictor.ml.scenes).
"""
from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from predictor.ml.prediction import S3_CONCEPTS
from predictor.ml.preprocess import IMAGENET_MEAN, IMAGENET_STD

LABEL_COLUMNS = {3: "S3_Label", 16: "S16_Label", 365: "S365_Label"}
ID_COLUMNS = ("IMG_ID", "id", "image_id", "img_id")
S16_TO_S3 = np.array([0] * 6 + [1] * 4 + [2] * 6)


def s3_of(label: int, classes: int) -> int:
    """The S3 concept index of a scene label with `classes` classes."""
    if classes == 3:
        return int(label)
    if classes == 16:
        return int(S16_TO_S3[label])
    from predictor.ml.scenes import SceneMapping
    return int(np.argmax(SceneMapping.load_default().matrix[label]))


def read_scene_targets(path: str | Path, *, classes: int = 3) -> dict[str, int]:
    """{image id: scene class} from a label_scenes CSV (3 classes only) or a metadata CSV with S*_Label columns."""
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        fields = reader.fieldnames or []
        if "p_indoor" in fields and "id" in fields:
            if classes != 3:
                raise ValueError(f"{path} is a label_scenes CSV: it gives 3 scene classes (S3), not {classes}")
            return {row["id"]: int(np.argmax([float(row[f"p_{c}"]) for c in S3_CONCEPTS])) for row in reader}
        column = LABEL_COLUMNS.get(classes)
        id_column = next((c for c in ID_COLUMNS if c in fields), None)
        if column not in fields or id_column is None:
            raise ValueError(f"{path}: needs an id column ({'/'.join(ID_COLUMNS)}) and {column} for {classes} scene "
                             f"classes, or the label_scenes columns; it has {fields}")
        targets = {}
        for row in reader:
            value = (row.get(column) or "").strip()
            if value:
                label = int(float(value))
                if not 0 <= label < classes:
                    raise ValueError(f"{path}: {column} {label} of {row[id_column]} is outside 0..{classes - 1}")
                targets[row[id_column]] = label
        return targets


def concept_ids(targets: dict[str, int], *, classes: int, concept: str) -> set[str]:
    """Ids whose scene label falls in the S3 concept (for --scene-of-interest)."""
    wanted = S3_CONCEPTS.index(concept)
    return {image_id for image_id, label in targets.items() if s3_of(label, classes) == wanted}


class PairTransform:
    """(photo, segmentation image) -> [3 + 3, size, size]: the same crop and flip for both; the photo ImageNet-
    normalised, the map scaled to -1..1 and resized with nearest neighbours (class colours are not blended)."""

    def __init__(self, size: int = 224, *, train: bool, scale: tuple[float, float] = (0.66, 1.0)):
        self.size, self.train, self.scale = size, train, scale

    def __call__(self, image: Image.Image, segmentation: Image.Image) -> torch.Tensor:
        from torchvision.transforms import InterpolationMode, v2
        from torchvision.transforms.v2 import functional as F

        photo = F.to_dtype(F.pil_to_tensor(image), torch.float32, scale=True)
        seg = F.to_dtype(F.pil_to_tensor(segmentation), torch.float32, scale=True)
        if seg.shape[-2:] != photo.shape[-2:]:
            seg = F.resize(seg, list(photo.shape[-2:]), interpolation=InterpolationMode.NEAREST)
        size = [self.size, self.size]
        if self.train:
            top, left, h, w = v2.RandomResizedCrop.get_params(photo, scale=list(self.scale), ratio=[3 / 4, 4 / 3])
            photo = F.resized_crop(photo, top, left, h, w, size, antialias=True)
            seg = F.resized_crop(seg, top, left, h, w, size, interpolation=InterpolationMode.NEAREST)
            if torch.rand(()) < 0.5:
                photo, seg = F.horizontal_flip(photo), F.horizontal_flip(seg)
        else:
            short = int(math.floor(self.size * 256 / 224))
            photo = F.center_crop(F.resize(photo, [short], antialias=True), size)
            seg = F.center_crop(F.resize(seg, [short], interpolation=InterpolationMode.NEAREST), size)
        photo = F.normalize(photo, IMAGENET_MEAN, IMAGENET_STD)
        return torch.cat([photo, seg * 2.0 - 1.0])

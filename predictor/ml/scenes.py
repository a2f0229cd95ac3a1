"""Scene concepts: the 365 Places365 classes mapped onto S3 (indoor / natural / urban) by GeoWeb's own matrix.

p_S3 = p_365 @ H where H is the 365x3 matrix in predictor/data/places365_s3.csv (rows sum to 1); the concept is
the argmax, which picks the individual scene network (ISN) that answers.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from predictor.ml.prediction import S3_CONCEPTS

DEFAULT_CSV = Path(__file__).resolve().parents[1] / "data" / "places365_s3.csv"
NUM_CLASSES = 365
CSV_COLUMNS = ["index", "category", *S3_CONCEPTS]


def human_name(category: str) -> str:
    """'/a/airport_terminal' -> 'airport terminal'; '/b/bus_station/indoor' -> 'bus station (indoor)'."""
    parts = category.strip("/").split("/")
    if len(parts) >= 2 and len(parts[0]) == 1:
        parts = parts[1:]
    name = parts[0].replace("_", " ")
    if len(parts) > 1:
        name += " (" + ", ".join(p.replace("_", " ") for p in parts[1:]) + ")"
    return name


@dataclass(eq=False)
class SceneMapping:
    """A [365, 3] float32 matrix with the Places365 category of each row."""

    categories: list[str]  # raw Places365 names, e.g. "/a/airport_terminal"
    matrix: np.ndarray
    labels: list[str] = field(init=False)  # human names, e.g. "airport terminal"

    def __post_init__(self):
        self.matrix = np.asarray(self.matrix, dtype=np.float32)
        if self.matrix.shape != (NUM_CLASSES, len(S3_CONCEPTS)):
            raise ValueError(f"scene mapping must be {NUM_CLASSES}x3, got {self.matrix.shape}")
        if len(self.categories) != NUM_CLASSES:
            raise ValueError(f"scene mapping needs {NUM_CLASSES} category names, got {len(self.categories)}")
        if (self.matrix < 0).any() or not np.allclose(self.matrix.sum(axis=1), 1.0, atol=1e-5):
            bad = int(np.argmax(np.abs(self.matrix.sum(axis=1) - 1.0) + (self.matrix < 0).any(axis=1)))
            raise ValueError(f"scene mapping row {bad} ({self.categories[bad]}) must be non-negative and sum to 1")
        self.labels = [human_name(c) for c in self.categories]

    @classmethod
    def from_csv(cls, path: str | Path) -> "SceneMapping":
        path = Path(path)
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header != CSV_COLUMNS:
                raise ValueError(f"{path}: expected header {','.join(CSV_COLUMNS)}, got {header}")
            categories, weights = [], []
            for number, row in enumerate(reader, start=2):
                if not row:
                    continue
                if len(row) != len(CSV_COLUMNS):
                    raise ValueError(f"{path}:{number}: expected {len(CSV_COLUMNS)} columns, got {len(row)}")
                try:
                    index = int(row[0])
                    values = [float(v) for v in row[2:]]
                except ValueError as error:
                    raise ValueError(f"{path}:{number}: {error}") from None
                if index != len(categories):
                    raise ValueError(f"{path}:{number}: index {index} out of order (expected {len(categories)})")
                categories.append(row[1])
                weights.append(values)
        return cls(categories=categories, matrix=np.array(weights, dtype=np.float32).reshape(-1, 3))

    def to_csv(self, path: str | Path) -> None:
        """Write the mapping in the format `from_csv` reads (floats written exactly, by repr)."""
        with Path(path).open("w", encoding="utf-8", newline="") as handle:
            handle.write(",".join(CSV_COLUMNS) + "\n")
            for i, category in enumerate(self.categories):
                handle.write(f"{i},{category}," + ",".join(repr(float(v)) for v in self.matrix[i]) + "\n")

    @classmethod
    def load_default(cls) -> "SceneMapping":
        return cls.from_csv(DEFAULT_CSV)

    def s3_probabilities(self, p365):
        """[N, 365] (or [365]) Places365 probabilities -> [N, 3] (or [3]) S3 probabilities.

        Works on NumPy arrays and torch tensors (the result stays on the tensor's device and dtype).
        """
        if _is_torch(p365):
            import torch

            matrix = torch.as_tensor(self.matrix, device=p365.device, dtype=p365.dtype)
            if p365.shape[-1] != NUM_CLASSES:
                raise ValueError(f"expected {NUM_CLASSES} Places365 probabilities, got shape {tuple(p365.shape)}")
            return p365 @ matrix
        p365 = np.asarray(p365)
        if p365.shape[-1] != NUM_CLASSES:
            raise ValueError(f"expected {NUM_CLASSES} Places365 probabilities, got shape {p365.shape}")
        dtype = p365.dtype if np.issubdtype(p365.dtype, np.floating) else np.float32
        return p365.astype(dtype, copy=False) @ self.matrix.astype(dtype)

    def concept(self, p365) -> str | list[str]:
        """The S3 concept name ("indoor", "natural" or "urban") of one vector, or a list for a batch.

        Ties go to the first concept in S3_CONCEPTS order.
        """
        s3 = self.s3_probabilities(p365)
        if _is_torch(s3):
            s3 = s3.detach().cpu().numpy()
        winners = np.argmax(s3, axis=-1)
        if np.ndim(winners) == 0:
            return S3_CONCEPTS[int(winners)]
        return [S3_CONCEPTS[int(w)] for w in winners]

    def top_categories(self, p365, k: int = 5) -> list[tuple[str, float]]:
        """The k most probable Places365 categories of one probability vector, as (human name, probability)."""
        p = p365.detach().cpu().numpy() if _is_torch(p365) else np.asarray(p365)
        if p.shape != (NUM_CLASSES,):
            raise ValueError(f"expected one vector of {NUM_CLASSES} probabilities, got shape {p.shape}")
        order = np.argsort(-p, kind="stable")[:k]
        return [(self.labels[i], float(p[i])) for i in order]


def _is_torch(value) -> bool:
    return type(value).__module__.startswith("torch")

"""S2-cell partitionings of the Earth: load and save the paper's CSV files, point -> cell, parents, polygons.

A partitioning is a set of disjoint S2 cells (quadtree leaves of mixed levels). Each cell is one output class of
a classifier head and carries the mean coordinate of its training images, which is what gets predicted.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import s2sphere

MIN_LEVEL = 2
MAX_LEVEL = 30
CSV_HEADER = ["class_label", "hex_id", "imgs_per_cell", "latitude_mean", "longitude_mean"]
# The paper's three partitionings, in the order every model lists them (heads, bundles, events): coarse -> fine.
HIERARCHY_NAMES = ("coarse", "middle", "fine")


def leaf_cell(lat: float, lon: float) -> s2sphere.CellId:
    return s2sphere.CellId.from_lat_lng(s2sphere.LatLng.from_degrees(lat, lon))


def token_level(token: str) -> int:
    return s2sphere.CellId.from_token(token).level()


@dataclass(eq=False)
class Partitioning:
    """One partitioning: class index i <-> S2 cell `tokens[i]` with mean coordinate (lat[i], lon[i])."""

    name: str
    tokens: list[str]
    counts: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    num_images: int | None = None
    _index: dict[str, int] = field(init=False, repr=False)
    _levels: np.ndarray = field(init=False, repr=False)

    def __post_init__(self):
        self.counts = np.asarray(self.counts, dtype=np.int64)
        self.lat = np.asarray(self.lat, dtype=np.float64)
        self.lon = np.asarray(self.lon, dtype=np.float64)
        if not (len(self.tokens) == len(self.counts) == len(self.lat) == len(self.lon)):
            raise ValueError(f"partitioning {self.name!r}: columns have different lengths")
        self._index = {token: i for i, token in enumerate(self.tokens)}
        if len(self._index) != len(self.tokens):
            raise ValueError(f"partitioning {self.name!r}: duplicated cell tokens")
        self._levels = np.array([token_level(t) for t in self.tokens], dtype=np.int8)

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def levels(self) -> np.ndarray:
        return self._levels

    def index_of(self, token: str) -> int | None:
        return self._index.get(token)

    # --- files ------------------------------------------------------------------------------------------------

    @classmethod
    def from_csv(cls, path: str | Path, name: str | None = None) -> "Partitioning":
        """Read the paper's format: 2 preamble lines, then class_label,hex_id,imgs_per_cell,lat_mean,lon_mean."""
        path = Path(path)
        text = path.read_text(encoding="utf-8")
        return cls.from_text(text, name=name or path.stem)

    @classmethod
    def from_text(cls, text: str, name: str) -> "Partitioning":
        lines = text.splitlines()
        num_images = None
        if lines and lines[0].startswith("num_images"):
            try:
                num_images = int(lines[0].split(":", 1)[1])
            except ValueError:
                num_images = None
        if len(lines) < 3 or lines[2].strip().split(",") != CSV_HEADER:
            raise ValueError(f"partitioning {name!r}: expected 2 preamble lines and the header {','.join(CSV_HEADER)}")
        rows = list(csv.reader(lines[3:]))
        rows = [row for row in rows if row]
        labels = [int(row[0]) for row in rows]
        if labels != list(range(len(rows))):
            raise ValueError(f"partitioning {name!r}: class_label must run 0..n-1 in order")
        return cls(
            name=name,
            tokens=[row[1] for row in rows],
            counts=[int(row[2]) for row in rows],
            lat=[float(row[3]) for row in rows],
            lon=[float(row[4]) for row in rows],
            num_images=num_images,
        )

    def to_text(self) -> str:
        out = io.StringIO()
        out.write(f"num_images: {self.num_images if self.num_images is not None else int(self.counts.sum())}\n")
        out.write("min_concept_probability: ---\n")
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(CSV_HEADER)
        for i, token in enumerate(self.tokens):
            writer.writerow([i, token, int(self.counts[i]), repr(float(self.lat[i])), repr(float(self.lon[i]))])
        return out.getvalue()

    def to_csv(self, path: str | Path) -> None:
        Path(path).write_text(self.to_text(), encoding="utf-8")

    # --- geometry ---------------------------------------------------------------------------------------------

    def class_of(self, lat: float, lon: float) -> int | None:
        """The class whose cell contains the point, walking S2 levels 2..30 inclusive (level-30 cells count)."""
        leaf = leaf_cell(lat, lon)
        for level in range(MIN_LEVEL, MAX_LEVEL + 1):
            index = self._index.get(leaf.parent(level).to_token())
            if index is not None:
                return index
        return None

    def classes_of(self, lats, lons) -> np.ndarray:
        """Vector form of `class_of`; -1 where a point lies in no cell of this partitioning."""
        return np.array([
            -1 if (c := self.class_of(float(a), float(b))) is None else c for a, b in zip(lats, lons)
        ], dtype=np.int64)

    def cell_polygon(self, index: int, edge_points: int | None = None) -> dict:
        """GeoJSON Polygon of the cell. S2 edges are geodesics, so large cells get extra points along each edge."""
        cell = s2sphere.Cell(s2sphere.CellId.from_token(self.tokens[index]))
        level = int(self._levels[index])
        steps = edge_points if edge_points is not None else max(1, 8 - level) if level < 8 else 1
        vertices = [cell.get_vertex(k) for k in range(4)]
        ring: list[list[float]] = []
        for k in range(4):
            a, b = vertices[k], vertices[(k + 1) % 4]
            for s in range(steps):
                t = s / steps
                point = s2sphere.Point(*(a[i] * (1 - t) + b[i] * t for i in range(3)))
                latlng = s2sphere.LatLng.from_point(point.normalize())
                ring.append([round(latlng.lng().degrees, 5), round(latlng.lat().degrees, 5)])
        _unwrap_antimeridian(ring)
        ring.append(ring[0])
        return {"type": "Polygon", "coordinates": [ring]}


def _unwrap_antimeridian(ring: list[list[float]]) -> None:
    """Keep consecutive longitudes within 180 degrees of each other so Leaflet does not draw across the world."""
    for i in range(1, len(ring)):
        while ring[i][0] - ring[i - 1][0] > 180:
            ring[i][0] -= 360
        while ring[i][0] - ring[i - 1][0] < -180:
            ring[i][0] += 360


def parent_matrix(partitionings: list[Partitioning]) -> np.ndarray:
    """For each cell of the finest partitioning, its class index in every partitioning (ordered coarse -> fine).

    As in the paper: from each fine cell's own level down to level 2, the ancestors of its mean coordinate are
    looked up in each coarser partitioning; the last column is the fine cell itself.
    """
    if not partitionings:
        raise ValueError("no partitionings")
    finest = partitionings[-1]
    matrix = np.full((len(finest), len(partitionings)), -1, dtype=np.int64)
    matrix[:, -1] = np.arange(len(finest))
    for c in range(len(finest)):
        leaf = leaf_cell(finest.lat[c], finest.lon[c])
        for p, partitioning in enumerate(partitionings[:-1]):
            for level in range(int(finest.levels[c]), MIN_LEVEL - 1, -1):
                index = partitioning.index_of(leaf.parent(level).to_token())
                if index is not None:
                    matrix[c, p] = index
                    break
    missing = np.argwhere(matrix < 0)
    if len(missing):
        c, p = missing[0]
        raise ValueError(
            f"cell {finest.tokens[c]} of {finest.name!r} has no parent in {partitionings[p].name!r}: "
            "partitionings must be nested")
    return matrix


def partitioning_names(partitionings: list[Partitioning]) -> list[str]:
    """The names a model gives its partitionings: HIERARCHY_NAMES for the paper's three, else their own names."""
    if len(partitionings) == len(HIERARCHY_NAMES):
        return list(HIERARCHY_NAMES)
    return [p.name for p in partitionings]


# --- small partitionings for tests and the untrained demo bundle ---------------------------------------------------

# Places with many photos, so the tiny partitionings look like a (very coarse) photo distribution.
_TINY_CENTRES = ((48.86, 2.35), (51.51, -0.13), (41.39, 2.17), (40.71, -74.01), (37.77, -122.42), (35.68, 139.69),
                 (-33.87, 151.21), (-22.91, -43.17), (55.75, 37.62), (28.61, 77.21), (1.35, 103.82),
                 (30.04, 31.24), (-1.29, 36.82), (19.43, -99.13), (64.15, -21.94), (-54.8, -68.3))


def tiny_partitionings(seed: int = 0) -> list[Partitioning]:
    """Nested S2 partitionings at levels 3 / 4 / 5 (35 / 64 / 128 cells for seed 0) from 400 pseudo-random points
    around a few photo hot spots."""
    rng = np.random.default_rng(seed)
    centres = np.array(_TINY_CENTRES)
    pick = rng.integers(0, len(centres), size=400)
    lats = np.clip(centres[pick, 0] + rng.normal(0, 1.5, size=400), -89.0, 89.0)
    lons = (centres[pick, 1] + rng.normal(0, 2.5, size=400) + 180.0) % 360.0 - 180.0
    leaves = [leaf_cell(a, b) for a, b in zip(lats, lons)]
    partitionings = []
    for name, level in zip(HIERARCHY_NAMES, (3, 4, 5)):
        groups: dict[str, list[int]] = {}
        for i, leaf in enumerate(leaves):
            groups.setdefault(leaf.parent(level).to_token(), []).append(i)
        tokens = sorted(groups)
        lat_mean, lon_mean = [], []
        for token in tokens:
            members = groups[token]
            lat_c, lon_c = float(lats[members].mean()), float(lons[members].mean())
            cell = s2sphere.CellId.from_token(token)
            if leaf_cell(lat_c, lon_c).parent(level) != cell:
                centre = cell.to_lat_lng()  # a mean outside its cell would break the parent lookup
                lat_c, lon_c = centre.lat().degrees, centre.lng().degrees
            lat_mean.append(lat_c)
            lon_mean.append(lon_c)
        partitionings.append(Partitioning(name=name, tokens=tokens, counts=[len(groups[t]) for t in tokens],
                                          lat=lat_mean, lon=lon_mean, num_images=len(leaves)))
    return partitionings

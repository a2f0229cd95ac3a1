"""Keeping evaluation photos apart from training photos: validation splits by image, author or place, and the
overlap check between a set that is scored and the set that was trained on.

Two photos count as the same image when their ids name the same photo (`image_key`: Flickr file names and MP-16
paths reduce to the Flickr photo id), and as the same shot when one author took both at the same coordinate
(rounded to `PLACE_DECIMALS` decimals, about 11 m). MP-16 holds many bursts of one user at one spot, so a split by
image puts near-copies on both sides; a split by author or by place does not.
"""
from __future__ import annotations

import csv
import gzip
import hashlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import NamedTuple

SPLIT_KINDS = ("image", "author", "place")
DEFAULT_PLACE_LEVEL = 10  # S2 level-10 cells average about 81 km², roughly 9 km across
PLACE_DECIMALS = 4  # about 11 m of latitude: "the same coordinate" for the (author, coordinate) check
SAMPLES_FILE = "samples.csv.gz"
SAMPLES_HEADER = ["id", "author", "lat", "lon"]
# Flickr file names as the Im2GPS test sets use them: <photo id>_<secret>_<server>_<owner NSID>.
FLICKR_NAME = re.compile(r"^(\d+)_[0-9a-f]+(?:_\d+(?:_(\d+@N\d+))?)?(?:_[a-z])?$")
EXAMPLES = 5


class Sample(NamedTuple):
    id: str
    author: str | None
    lat: float
    lon: float


def image_key(image_id: str) -> str:
    """The photo an id names: the Flickr photo id for Flickr file names or numeric names (MP-16's `ab/cd/123.jpg`,
    Im2GPS's `123_secret_server_owner.jpg`), otherwise the id without its image suffix, lower-cased."""
    path = PurePosixPath(str(image_id).strip().replace("\\", "/"))
    stem = path.stem if path.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp", ".heic", ".tif", ".tiff") \
        else path.name
    match = FLICKR_NAME.match(stem)
    if match or stem.isdigit():
        return match.group(1) if match else stem
    return str(path.with_name(stem)).lower()


def author_from_id(image_id: str) -> str | None:
    """The Flickr owner NSID an Im2GPS-style file name carries (`..._<owner>.jpg`), else None."""
    stem = PurePosixPath(str(image_id).strip()).stem
    match = FLICKR_NAME.match(stem)
    return match.group(2) if match and match.group(2) else None


def normal_author(author) -> str | None:
    text = str(author).strip() if author is not None else ""
    return text.lower() if text and text.lower() not in ("nan", "none", "null", "unknown") else None


def _place(lat: float, lon: float) -> tuple[float, float]:
    return round(float(lat), PLACE_DECIMALS), round(float(lon), PLACE_DECIMALS)


def hashed_fraction(key: str) -> float:
    """A stable number in [0, 1) for a key, so a split never changes between runs or machines."""
    digest = hashlib.sha1(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big") / 2**32


@dataclass(frozen=True)
class ValidationSplit:
    """Which photos are held out for validation: a `fraction` of the images, of the authors (all photos of a held-out
    author), or of the S2 cells at `place_level` (all photos taken in a held-out cell).

    `by="auto"` splits by author wherever a photo's author is known and by image otherwise. Picklable, so a
    DataLoader worker can apply it to every sample it reads.
    """

    by: str = "auto"
    fraction: float = 0.0
    place_level: int = DEFAULT_PLACE_LEVEL

    def __post_init__(self):
        if self.by not in (*SPLIT_KINDS, "auto"):
            raise ValueError(f"--val-split-by must be one of {', '.join(SPLIT_KINDS)}, not {self.by!r}")
        if not 0.0 <= self.fraction < 1.0:
            raise ValueError(f"the validation fraction must be at least 0 and below 1, not {self.fraction}")
        if not 0 <= self.place_level <= 30:
            raise ValueError(f"the place level is an S2 level from 0 to 30, not {self.place_level}")

    def key_kind(self, author: str | None) -> str:
        if self.by == "auto":
            return "author" if normal_author(author) else "image"
        if self.by == "author" and not normal_author(author):
            return "image"  # counted by the caller: a photo without an author cannot be split by author
        return self.by

    def key(self, image_id: str, author: str | None, lat: float, lon: float) -> str:
        kind = self.key_kind(author)
        if kind == "author":
            return "author:" + normal_author(author)
        if kind == "place":
            import s2sphere
            cell = s2sphere.CellId.from_lat_lng(s2sphere.LatLng.from_degrees(float(lat), float(lon)))
            return "place:" + cell.parent(self.place_level).to_token()
        return image_id  # the key of the earlier hash split by id, so existing splits stay where they were

    def holds_out(self, image_id: str, author: str | None, lat: float, lon: float) -> bool:
        return self.fraction > 0 and hashed_fraction(self.key(image_id, author, lat, lon)) < self.fraction

    def describe(self) -> str:
        how = {"image": "by image id", "author": "by author (every photo of an author on one side)",
               "place": f"by place (S2 cells of level {self.place_level}, each on one side)",
               "auto": "by author where known, else by image id"}[self.by]
        return f"{100 * self.fraction:g} % held out {how}"

    def to_dict(self) -> dict:
        return {"by": self.by, "fraction": self.fraction, "place_level": self.place_level}


@dataclass(frozen=True)
class SplitSide:
    """A shard-stream filter: the samples on one side of a split (`held_out` True = the validation side)."""

    split: ValidationSplit
    held_out: bool

    def __call__(self, meta: dict) -> bool:
        return self.split.holds_out(meta["id"], meta.get("author"), meta["lat"], meta["lon"]) == self.held_out


# --- the list of samples beside the shards ---------------------------------------------------------------------

class SampleListWriter:
    """`samples.csv.gz` (id, author, lat, lon) written beside a shard folder, one row per stored sample, so overlap
    checks read a small file instead of every tar."""

    def __init__(self, folder: Path):
        self._raw = gzip.open(folder / SAMPLES_FILE, "wt", newline="", encoding="utf-8")
        self._writer = csv.writer(self._raw)
        self._writer.writerow(SAMPLES_HEADER)

    def add(self, image_id: str, author: str | None, lat: float, lon: float) -> None:
        self._writer.writerow([image_id, author or "", repr(float(lat)), repr(float(lon))])

    def close(self) -> None:
        self._raw.close()


def read_samples(folder: str | Path) -> Iterator[Sample]:
    """Every sample of a shard folder: from its samples.csv.gz, or (older folders) from the tars' JSON members."""
    folder = Path(folder)
    listing = folder / SAMPLES_FILE
    if listing.is_file():
        with gzip.open(listing, "rt", newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                yield Sample(row["id"], row["author"] or None, float(row["lat"]), float(row["lon"]))
        return
    from predictor.ml.train.shards import iterate_tar_metadata, read_index
    for shard in read_index(folder)["shards"]:
        for meta, _ in iterate_tar_metadata(folder / shard["name"]):
            yield Sample(meta["id"], meta.get("author"), float(meta["lat"]), float(meta["lon"]))


# --- overlap ---------------------------------------------------------------------------------------------------

@dataclass
class Overlap:
    """How far an evaluated set (validation or test) overlaps the training set."""

    evaluated: int  # photos in the evaluated set
    training: int  # training samples compared with
    shared_ids: int = 0  # evaluated photos whose image is in the training set
    shared_shots: int = 0  # other evaluated photos whose (author, coordinate) is in the training set
    shared_authors: int = 0  # evaluated photos whose author also has training photos
    without_author: int = 0  # evaluated photos with no known author (only the id check applies to them)
    overlapping: int = 0  # evaluated photos that are training photos by id or by (author, coordinate)
    examples: list[str] = field(default_factory=list)

    def summary(self, compared_with: str = "training images") -> str:
        parts = [f"{self.shared_ids} share an image id", f"{self.shared_shots} more share author and coordinate",
                 f"{self.shared_authors} have an author with training photos"]
        text = (f"{self.overlapping} of {self.evaluated} are training photos (compared with {self.training} "
                f"{compared_with}: {', '.join(parts)})")
        if self.without_author:
            text += f"; {self.without_author} have no known author, so only their ids were compared"
        return text

    def to_dict(self) -> dict:
        return {"evaluated": self.evaluated, "training": self.training, "overlapping": self.overlapping,
                "shared_ids": self.shared_ids, "shared_author_coordinate": self.shared_shots,
                "shared_authors": self.shared_authors, "without_author": self.without_author,
                "examples": self.examples[:EXAMPLES]}

    @classmethod
    def from_dict(cls, values: dict) -> "Overlap":
        return cls(evaluated=values["evaluated"], training=values["training"], shared_ids=values["shared_ids"],
                   shared_shots=values["shared_author_coordinate"], shared_authors=values["shared_authors"],
                   without_author=values["without_author"], overlapping=values["overlapping"],
                   examples=list(values.get("examples", [])))


def find_overlap(evaluated: Iterable[Sample], training: Iterable[Sample]) -> Overlap:
    """Compare an evaluated set (held in memory, it is the small one) with a training set streamed once."""
    evaluated = list(evaluated)
    by_key: dict[str, list[int]] = {}
    by_shot: dict[tuple[str, float, float], list[int]] = {}
    by_author: dict[str, list[int]] = {}
    without_author = 0
    for i, sample in enumerate(evaluated):
        by_key.setdefault(image_key(sample.id), []).append(i)
        author = normal_author(sample.author)
        if author is None:
            without_author += 1
            continue
        by_author.setdefault(author, []).append(i)
        by_shot.setdefault((author, *_place(sample.lat, sample.lon)), []).append(i)
    same_id, same_shot, same_author = set(), set(), set()
    examples: list[str] = []
    count = 0
    for sample in training:
        count += 1
        hits = by_key.get(image_key(sample.id))
        if hits:
            for i in hits:
                if i not in same_id and len(examples) < EXAMPLES:
                    examples.append(f"{evaluated[i].id} is training image {sample.id}")
            same_id.update(hits)
        author = normal_author(sample.author)
        if author is None:
            continue
        if author in by_author:
            same_author.update(by_author[author])
            hits = by_shot.get((author, *_place(sample.lat, sample.lon)))
            if hits:
                for i in hits:
                    if i not in same_shot and i not in same_id and len(examples) < EXAMPLES:
                        examples.append(f"{evaluated[i].id}: author {author} has training image {sample.id} at "
                                        f"the same coordinate")
                same_shot.update(hits)
    return Overlap(evaluated=len(evaluated), training=count, shared_ids=len(same_id),
                   shared_shots=len(same_shot - same_id),
                   shared_authors=len(same_author), without_author=without_author,
                   overlapping=len(same_id | same_shot), examples=examples)


def samples_of_rows(rows: Iterable) -> list[Sample]:
    """Samples from metadata rows (objects with id, lat, lon and an `extra` dict that may hold the author)."""
    return [Sample(row.id, (row.extra or {}).get("author") or author_from_id(row.id), row.lat, row.lon)
            for row in rows]


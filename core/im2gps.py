"""The one reader of the Im2GPS / GeoEstimation files: published per-image results, the test sets' metadata CSV,
and the metadata the Im2GPS photos carry in their own JPEG comments.

One set of rules for everyone. A file that cannot be read as the format at all (missing, not UTF-8, wrong header
or columns) raises `Im2gpsFormatError`. Otherwise every row is checked, and a row that breaks a rule becomes a
`RowProblem` (file, line, image id, what is wrong) instead of a row: the evaluation (predictor/ml/evaluation.py)
refuses a file with any problem, the game import (games/importing.py) skips those rows and reports why.

Django-free, so predictor/ml can use it as well as the games app.
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

from core.coordinates import valid_coordinates
from core.photo_metadata import NotParseable, jpeg_comments

RESULTS_HEADER = ["img_id", "gt_lat", "predicted_lat", "gt_long", "predicted_long", "great_circle_distance"]
SUMMARY_HEADER = ["street acc (1km)", "city acc (25km)", "region acc (200km)", "country acc (750km)",
                  "continent acc (2500km)", "mean deviation (km)"]
META_REQUIRED = ("IMG_ID", "LAT", "LON")
SCENE_COLUMNS = ("Prob_indoor", "Prob_natural", "Prob_urban")
S3_LABELS = ("indoor", "natural", "urban")
# The published probabilities carry float noise (1.00000008): tolerated, then clamped to [0, 1].
PROBABILITY_NOISE = 1e-6


class Im2gpsFormatError(ValueError):
    """A file that is not in the expected format; the message names the file and, where it can, the line."""


@dataclass(frozen=True)
class RowProblem:
    source: str
    line: int
    img_id: str
    message: str

    def __str__(self) -> str:
        return f"{self.source}:{self.line}: {self.message}"


# --- results files ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ResultRow:
    line: int
    img_id: str
    gt_lat: float
    predicted_lat: float
    gt_lon: float
    predicted_lon: float
    stored_km: float


@dataclass
class ResultsFile:
    source: str
    rows: list[ResultRow] = field(default_factory=list)
    problems: list[RowProblem] = field(default_factory=list)
    summary: list[float] | None = None  # the file's own summary row (accuracies, then the mean km), if present


def read_results(path: str | Path) -> ResultsFile:
    """A published results file: its header, one row per image, then optionally a blank line, the summary header
    and one summary row."""
    path = Path(path)
    return parse_results(_read_text(path), source=str(path))


def parse_results(text: str, *, source: str = "<results>") -> ResultsFile:
    lines = text.splitlines()
    if not lines or [cell.strip() for cell in lines[0].split(",")] != RESULTS_HEADER:
        got = lines[0][:120] if lines else "an empty file"
        raise Im2gpsFormatError(f"{source}:1: expected the header {','.join(RESULTS_HEADER)}, got {got!r}")
    out = ResultsFile(source=source)
    seen: dict[str, int] = {}
    number = 1
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            break
        row = next(csv.reader([line]))
        img_id = row[0].strip() if row else ""

        def problem(message: str) -> None:
            out.problems.append(RowProblem(source, number, img_id or f"line {number}", message))

        if len(row) != len(RESULTS_HEADER):
            problem(f"expected {len(RESULTS_HEADER)} columns, got {len(row)}")
            continue
        if not img_id:
            problem("empty img_id")
            continue
        if img_id in seen:
            problem(f"img_id {img_id!r} repeats line {seen[img_id]}")
            continue
        seen[img_id] = number
        try:
            numbers = [float(value) for value in row[1:]]
        except ValueError:
            problem(f"non-numeric value in {line[:120]!r}")
            continue
        if not all(math.isfinite(value) for value in numbers):
            problem(f"non-finite value in {line[:120]!r}")
            continue
        gt_lat, pred_lat, gt_lon, pred_lon, stored = numbers
        if not (valid_coordinates(gt_lat, gt_lon) and valid_coordinates(pred_lat, pred_lon)):
            problem(f"coordinates out of range in {line[:120]!r}")
            continue
        out.rows.append(ResultRow(number, img_id, gt_lat, pred_lat, gt_lon, pred_lon, stored))
    else:
        number += 1  # no blank line: the file ended after the rows
    if not out.rows and not out.problems:
        raise Im2gpsFormatError(f"{source}: no result rows after the header")
    out.summary = _parse_summary(lines[number:], source=source, first_line=number + 1)
    return out


def _parse_summary(lines: list[str], *, source: str, first_line: int) -> list[float] | None:
    numbered = [(first_line + i, line) for i, line in enumerate(lines) if line.strip()]
    if not numbered:
        return None
    (header_no, header), rest = numbered[0], numbered[1:]
    if [cell.strip() for cell in header.split(",")] != SUMMARY_HEADER:
        raise Im2gpsFormatError(
            f"{source}:{header_no}: after the blank line expected the summary header {','.join(SUMMARY_HEADER)}, "
            f"got {header[:120]!r}")
    if len(rest) != 1:
        raise Im2gpsFormatError(f"{source}:{header_no}: expected exactly one summary row, got {len(rest)}")
    row_no, row = rest[0]
    try:
        summary = [float(value) for value in row.split(",")]
    except ValueError:
        raise Im2gpsFormatError(f"{source}:{row_no}: non-numeric summary row {row[:120]!r}") from None
    if len(summary) != len(SUMMARY_HEADER):
        raise Im2gpsFormatError(f"{source}:{row_no}: expected {len(SUMMARY_HEADER)} summary values")
    return summary


# --- metadata CSV -------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class MetaRow:
    line: int
    img_id: str
    lat: float
    lon: float
    author: str = ""
    s3_label: int | None = None  # 0 indoor, 1 natural, 2 urban
    p_indoor: float | None = None
    p_natural: float | None = None
    p_urban: float | None = None


@dataclass
class MetaFile:
    source: str
    columns: list[str]
    rows: list[MetaRow] = field(default_factory=list)
    problems: list[RowProblem] = field(default_factory=list)


def read_meta(path: str | Path) -> MetaFile:
    """A test set's metadata CSV (IMG_ID, AUTHOR, LAT, LON, S3_Label, ..., Prob_indoor, Prob_natural, Prob_urban).

    IMG_ID, LAT and LON are required columns; the others are read when present. A repeated IMG_ID is a problem
    on every line it appears on: which of the rows is right cannot be known.
    """
    path = Path(path)
    source = str(path)
    lines = []
    for line in _read_text(path).splitlines():
        if not line.strip():
            break
        lines.append(line)
    reader = csv.DictReader(lines)
    columns = [name.strip() for name in (reader.fieldnames or [])]
    missing = [name for name in META_REQUIRED if name not in columns]
    if missing:
        raise Im2gpsFormatError(f"{source}:1: the metadata file lacks the column(s) {', '.join(missing)} "
                                f"(has: {', '.join(columns) or 'nothing'})")
    reader.fieldnames = columns
    numbered = [(number, {k: (v or "").strip() for k, v in row.items() if k is not None})
                for number, row in enumerate(reader, start=2)]
    lines_of: dict[str, list[int]] = {}
    for number, row in numbered:
        lines_of.setdefault(row.get("IMG_ID", ""), []).append(number)
    out = MetaFile(source=source, columns=columns)
    for number, row in numbered:
        img_id = row.get("IMG_ID", "")

        def problem(message: str) -> None:
            out.problems.append(RowProblem(source, number, img_id or f"line {number}", message))

        if not img_id or "/" in img_id or "\\" in img_id:
            problem("missing or invalid IMG_ID")
            continue
        if len(lines_of[img_id]) > 1:
            problem(f"duplicated IMG_ID (it appears on lines {', '.join(map(str, lines_of[img_id]))})")
            continue
        try:
            lat, lon = _finite(row["LAT"]), _finite(row["LON"])
        except ValueError:
            problem(f"LAT/LON are not numbers ({row['LAT']!r}, {row['LON']!r})")
            continue
        if not valid_coordinates(lat, lon):
            problem(f"coordinates out of range: {lat}, {lon}")
            continue
        try:
            probabilities = [_finite(row[name]) if row.get(name) else None for name in SCENE_COLUMNS]
        except ValueError:
            problem("a scene probability is not a number")
            continue
        if any(p is not None and not -PROBABILITY_NOISE <= p <= 1 + PROBABILITY_NOISE for p in probabilities):
            problem("a scene probability is outside [0, 1]")
            continue
        label = None
        if row.get("S3_Label"):
            try:
                label = int(row["S3_Label"])
            except ValueError:
                label = -1
            if not 0 <= label < len(S3_LABELS):
                problem(f"S3_Label {row['S3_Label']!r} is not 0, 1 or 2")
                continue
        p_indoor, p_natural, p_urban = (None if p is None else min(1.0, max(0.0, p)) for p in probabilities)
        out.rows.append(MetaRow(number, img_id, lat, lon, row.get("AUTHOR", ""), label, p_indoor, p_natural,
                                p_urban))
    if not out.rows and not out.problems:
        raise Im2gpsFormatError(f"{source}: no rows after the header")
    return out


# --- the photos' own comments ------------------------------------------------------------------------------------

# The fields the Im2GPS photos carry, one `name: value` per COM segment (see ../shared/data/im2gps3k-cc/SOURCES.md).
PHOTO_FIELDS = ("photo", "owner", "title", "datetaken", "license", "latitude", "longitude")


@dataclass
class PhotoComments:
    """What an Im2GPS photo says about itself. `missing` names the expected fields it does not carry; `problems`
    the fields it carries in an unreadable form."""

    fields: dict[str, str]
    missing: list[str]
    problems: list[str] = field(default_factory=list)

    def number(self, name: str) -> float | None:
        try:
            value = _finite(self.fields[name])
        except (KeyError, ValueError):
            return None
        return value

    @property
    def flickr_id(self) -> str:
        return self.fields.get("photo", "").split(" ")[0]

    @property
    def owner(self) -> str:
        return self.fields.get("owner", "")

    @property
    def title(self) -> str:
        return self.fields.get("title", "")

    @property
    def date_taken(self) -> str:
        return self.fields.get("datetaken", "")

    @property
    def licence_id(self) -> int | None:
        try:
            return int(self.fields["license"])
        except (KeyError, ValueError):
            return None

    @property
    def position(self) -> tuple[float, float] | None:
        lat, lon = self.number("latitude"), self.number("longitude")
        if lat is None or lon is None or not valid_coordinates(lat, lon):
            return None
        return lat, lon

    @property
    def photo_page(self) -> str:
        """The Flickr page of the photo (https://www.flickr.com/photos/<owner>/<id>), when both are known."""
        if self.owner and self.flickr_id.isdigit():
            return f"https://www.flickr.com/photos/{self.owner}/{self.flickr_id}"
        return ""


def read_photo_comments(data: bytes) -> PhotoComments:
    """The `name: value` fields of a photo's JPEG comments, in any order; bytes after a segment's first NUL are
    left-over garbage and ignored. A photo that is not a JPEG, or carries no comments, has every field missing."""
    try:
        comments = jpeg_comments(data)
    except NotParseable:
        comments = []
    fields: dict[str, str] = {}
    problems = []
    for payload in comments:
        text = _decode(payload.split(b"\x00", 1)[0])
        name, colon, value = text.partition(":")
        if not colon or not name.strip():
            continue
        name = name.strip().lower()
        if name in fields:
            problems.append(f"field {name!r} appears twice")
            continue
        fields[name] = value.strip()
    for name in ("latitude", "longitude"):
        if name in fields and _try_float(fields[name]) is None:
            problems.append(f"{name} {fields[name]!r} is not a number")
    missing = [name for name in PHOTO_FIELDS if not fields.get(name)]
    return PhotoComments(fields=fields, missing=missing, problems=problems)


# --- shared rules -------------------------------------------------------------------------------------------------

def _finite(value: str) -> float:
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{value!r} is not a finite number")
    return number


def _try_float(value: str) -> float | None:
    try:
        return _finite(value)
    except ValueError:
        return None


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")  # older Flickr exports: one byte per character


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise Im2gpsFormatError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise Im2gpsFormatError(f"{path}: is a folder, not a file") from None
    except UnicodeDecodeError as error:
        raise Im2gpsFormatError(f"{path}: not a UTF-8 text file ({error.reason})") from None

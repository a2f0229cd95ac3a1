"""Geotagged photo collections read as (image, lat, lon, id): MP-16/YFCC-style CSV + folder or tar shards, the
OSV-5M layout (CSV + zip shards), and any folder of one's own photos with coordinates taken from EXIF GPS.

Every source counts what it had to skip (bad CSV rows, missing or unreadable images, photos without GPS) in a
`SourceReport`; nothing here raises on a bad item.
"""
from __future__ import annotations

import csv
import io
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from PIL import Image, ImageOps

from predictor.ml.geodesy import valid_coordinates
from predictor.ml.train.holdout import author_from_id, normal_author

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".heic", ".heif", ".tif", ".tiff")
GPS_IFD = 0x8825
# Column names seen in MP-16 / YFCC / Im2GPS / OSV-5M metadata files, matched case-insensitively.
ID_COLUMNS = ("id", "img_id", "image_id", "photo_id", "file_name", "filename", "image")
LAT_COLUMNS = ("lat", "latitude", "gps_lat", "true_lat")
LON_COLUMNS = ("lon", "lng", "long", "longitude", "gps_lon", "true_lon")
URL_COLUMNS = ("url", "image_url", "photo_url")
# Who took the photo: TIB's meta files say AUTHOR (a Flickr NSID), OSV-5M creator_id / creator_username.
AUTHOR_COLUMNS = ("author", "owner", "user_nsid", "user_id", "creator_id", "creator_username", "photographer",
                  "user")
EXIF_ARTIST = 0x013B


@dataclass
class GeoPhoto:
    image: Image.Image  # decoded, EXIF orientation applied, RGB
    lat: float
    lon: float
    id: str
    extra: dict = field(default_factory=dict)  # e.g. OSV-5M country/region/city, a URL, the author

    def __iter__(self):
        # Lets callers unpack `image, lat, lon, id = photo`.
        return iter((self.image, self.lat, self.lon, self.id))


@dataclass
class SourceReport:
    rows: int = 0  # metadata rows read (or files seen, for an EXIF folder)
    bad_rows: int = 0  # missing or unparsable id/coordinates, coordinates out of range
    duplicate_ids: int = 0
    missing_images: int = 0  # a row whose image file is nowhere to be found
    unreadable_images: int = 0  # the file exists but Pillow cannot decode it
    no_gps: int = 0  # EXIF folder: no usable GPS position
    unlisted_images: int = 0  # images in a shard/folder that no metadata row names
    yielded: int = 0
    examples: list[str] = field(default_factory=list)  # the first few problems, for the log

    def note(self, counter: str, message: str) -> None:
        setattr(self, counter, getattr(self, counter) + 1)
        if len(self.examples) < 20:
            self.examples.append(f"{counter}: {message}")

    def as_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        parts = [f"{name}={value}" for name, value in self.as_dict().items() if name != "examples" and value]
        return ", ".join(parts) or "nothing read"


def open_photo(data: bytes | Path) -> Image.Image:
    """Decode fully (so truncated files fail here, not later), apply EXIF orientation, convert to RGB."""
    image = Image.open(io.BytesIO(data) if isinstance(data, bytes) else data)
    image.load()
    image = ImageOps.exif_transpose(image)
    return image.convert("RGB")


def _pick_column(fieldnames: list[str], candidates: tuple[str, ...], explicit: str | None) -> str | None:
    lowered = {name.strip().lower(): name for name in fieldnames}
    if explicit:
        if explicit in fieldnames:
            return explicit
        return lowered.get(explicit.lower())
    for candidate in candidates:
        if candidate in lowered:
            return lowered[candidate]
    return None


@dataclass
class MetadataRow:
    id: str
    lat: float
    lon: float
    extra: dict


def read_metadata(path: str | Path, report: SourceReport, *, id_column: str | None = None,
                  lat_column: str | None = None, lon_column: str | None = None,
                  keep_columns: tuple[str, ...] = ()) -> dict[str, MetadataRow]:
    """Rows of a metadata CSV keyed by image id; bad rows and repeated ids are counted and skipped.

    `extra["author"]` holds the photo's author: from an author column when there is one, else from an Im2GPS-style
    Flickr file name (`<photo>_<secret>_<server>_<owner>.jpg`), else None."""
    rows: dict[str, MetadataRow] = {}
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        fieldnames = reader.fieldnames or []
        id_key = _pick_column(fieldnames, ID_COLUMNS, id_column)
        lat_key = _pick_column(fieldnames, LAT_COLUMNS, lat_column)
        lon_key = _pick_column(fieldnames, LON_COLUMNS, lon_column)
        if not (id_key and lat_key and lon_key):
            raise ValueError(f"{path}: need id, latitude and longitude columns; the header is {fieldnames}")
        url_key = _pick_column(fieldnames, URL_COLUMNS, None)
        author_key = _pick_column(fieldnames, AUTHOR_COLUMNS, None)
        wanted = [c for c in (*keep_columns, url_key) if c and c in fieldnames]
        for line_number, row in enumerate(reader, start=2):
            report.rows += 1
            image_id = (row.get(id_key) or "").strip()
            try:
                lat = float(row.get(lat_key) or "nan")
                lon = float(row.get(lon_key) or "nan")
            except ValueError:
                lat = lon = float("nan")
            if not image_id or not valid_coordinates(lat, lon):
                report.note("bad_rows", f"{Path(path).name} line {line_number}: {dict(row)}")
                continue
            if image_id in rows:
                report.note("duplicate_ids", f"{Path(path).name} line {line_number}: id {image_id}")
                continue
            extra = {c: row.get(c) for c in wanted}
            extra["author"] = normal_author(row.get(author_key)) if author_key else None
            extra["author"] = extra["author"] or author_from_id(image_id)
            rows[image_id] = MetadataRow(image_id, lat, lon, extra)
    return rows


def _lookup_keys(name: str) -> list[str]:
    """The ways a file name inside a folder/archive may be written in a metadata id column."""
    path = Path(name)
    keys = [name, path.name, path.stem, str(path.with_suffix(""))]
    return list(dict.fromkeys(keys))


class PhotoSource:
    """Base: iterate `GeoPhoto`s, counting problems in `.report`."""

    def __init__(self):
        self.report = SourceReport()

    def __iter__(self) -> Iterator[GeoPhoto]:
        raise NotImplementedError

    def _decode(self, data: bytes | Path, row: MetadataRow) -> GeoPhoto | None:
        try:
            image = open_photo(data)
        except Exception as error:  # Pillow raises many types for broken files
            self.report.note("unreadable_images", f"{row.id}: {error}")
            return None
        self.report.yielded += 1
        return GeoPhoto(image, row.lat, row.lon, row.id, row.extra)

    def _stream_archives(self, rows: dict[str, MetadataRow], members) -> Iterator[GeoPhoto]:
        """members yields (name, read_bytes); images are matched to rows by any of their name forms."""
        seen: set[str] = set()
        for name, read_bytes in members:
            if not name.lower().endswith(IMAGE_SUFFIXES):
                continue
            row = next((rows[k] for k in _lookup_keys(name) if k in rows), None)
            if row is None:
                self.report.note("unlisted_images", name)
                continue
            if row.id in seen:
                continue
            seen.add(row.id)
            try:
                data = read_bytes()
            except Exception as error:
                self.report.note("unreadable_images", f"{name}: {error}")
                continue
            photo = self._decode(data, row)
            if photo is not None:
                yield photo
        for image_id in rows.keys() - seen:
            self.report.note("missing_images", image_id)


class CsvPhotoSource(PhotoSource):
    """MP-16 / YFCC / Im2GPS style: a CSV of image id, lat, lon (optional url) and images either in a folder
    (`<folder>/<id>`, with or without an image suffix) or inside tar shards (e.g. the MP16-Pro tars)."""

    def __init__(self, metadata: str | Path, *, images: str | Path, id_column: str | None = None,
                 lat_column: str | None = None, lon_column: str | None = None):
        super().__init__()
        self.metadata = Path(metadata)
        self.images = Path(images)
        self.columns = dict(id_column=id_column, lat_column=lat_column, lon_column=lon_column)

    def _tar_paths(self) -> list[Path]:
        if self.images.is_file():
            return [self.images]
        return sorted(p for p in self.images.iterdir() if p.name.endswith((".tar", ".tar.gz", ".tgz")))

    def __iter__(self) -> Iterator[GeoPhoto]:
        rows = read_metadata(self.metadata, self.report, **self.columns)
        tars = self._tar_paths() if self.images.exists() else []
        if tars:
            yield from self._stream_archives(rows, self._tar_members(tars))
            return
        for row in rows.values():
            path = self._find_file(row.id)
            if path is None:
                self.report.note("missing_images", f"{row.id} (not under {self.images})")
                continue
            photo = self._decode(path, row)
            if photo is not None:
                yield photo

    def _find_file(self, image_id: str) -> Path | None:
        direct = self.images / image_id
        if direct.is_file():
            return direct
        for suffix in (".jpg", ".jpeg", ".png", ".JPG"):
            candidate = self.images / f"{image_id}{suffix}"
            if candidate.is_file():
                return candidate
        return None

    def _tar_members(self, tars: list[Path]):
        for tar_path in tars:
            try:
                with tarfile.open(tar_path, "r:*") as archive:
                    for member in archive:
                        if member.isfile():
                            yield member.name, (lambda m=member, a=archive: a.extractfile(m).read())
            except (tarfile.TarError, OSError) as error:
                self.report.note("unreadable_images", f"{tar_path.name}: broken tar ({error})")


class Osv5mPhotoSource(PhotoSource):
    """OpenStreetView-5M layout: `<root>/<split>.csv` (id, latitude, longitude, country, region, city, ...) and
    images in `<root>/images/<split>/<shard>.zip`, each zip holding `<id>.jpg` (possibly inside a folder)."""

    KEEP = ("country", "region", "sub-region", "city")

    def __init__(self, root: str | Path, *, split: str = "train", metadata: str | Path | None = None):
        super().__init__()
        self.root = Path(root)
        self.split = split
        self.metadata = Path(metadata) if metadata else self.root / f"{split}.csv"

    def __iter__(self) -> Iterator[GeoPhoto]:
        rows = read_metadata(self.metadata, self.report, keep_columns=self.KEEP)
        zips = sorted((self.root / "images" / self.split).glob("*.zip"))
        yield from self._stream_archives(rows, self._zip_members(zips))

    def _zip_members(self, zips: list[Path]):
        for zip_path in zips:
            try:
                with zipfile.ZipFile(zip_path) as archive:
                    for info in archive.infolist():
                        if not info.is_dir():
                            yield info.filename, (lambda i=info, a=archive: a.read(i))
            except (zipfile.BadZipFile, OSError) as error:
                self.report.note("unreadable_images", f"{zip_path.name}: broken zip ({error})")


def _rational(value) -> float:
    if isinstance(value, tuple) and len(value) == 2:  # old-style (numerator, denominator)
        return float(value[0]) / float(value[1])
    return float(value)


def exif_gps(image: Image.Image) -> tuple[float, float] | None:
    """(lat, lon) in degrees from the EXIF GPS IFD, or None when absent, zero or malformed."""
    try:
        gps = image.getexif().get_ifd(GPS_IFD)
        lat_ref, lat_dms, lon_ref, lon_dms = gps.get(1), gps.get(2), gps.get(3), gps.get(4)
        if lat_dms is None or lon_dms is None:
            return None

        def degrees(dms) -> float:
            parts = [_rational(v) for v in dms] + [0.0, 0.0]
            return parts[0] + parts[1] / 60.0 + parts[2] / 3600.0

        lat, lon = degrees(lat_dms), degrees(lon_dms)
        if isinstance(lat_ref, bytes):
            lat_ref = lat_ref.decode("ascii", "ignore")
        if isinstance(lon_ref, bytes):
            lon_ref = lon_ref.decode("ascii", "ignore")
        if str(lat_ref).strip().upper().startswith("S"):
            lat = -lat
        if str(lon_ref).strip().upper().startswith("W"):
            lon = -lon
    except (ZeroDivisionError, TypeError, ValueError, AttributeError, KeyError, OSError):
        return None
    if not valid_coordinates(lat, lon) or (lat == 0.0 and lon == 0.0):
        return None
    return lat, lon


class ExifFolderSource(PhotoSource):
    """Any folder (searched recursively) of one's own photos; the coordinates come from each file's EXIF GPS and
    the author, when the camera recorded one, from EXIF Artist. The id is the path relative to the folder."""

    def __init__(self, folder: str | Path):
        super().__init__()
        self.folder = Path(folder)

    def __iter__(self) -> Iterator[GeoPhoto]:
        paths = sorted(p for p in self.folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        for path in paths:
            self.report.rows += 1
            image_id = str(path.relative_to(self.folder))
            try:
                with Image.open(path) as raw:
                    position = exif_gps(raw)
                    artist = raw.getexif().get(EXIF_ARTIST)
            except Exception as error:
                self.report.note("unreadable_images", f"{image_id}: {error}")
                continue
            if position is None:
                self.report.note("no_gps", image_id)
                continue
            author = normal_author(artist) if isinstance(artist, str) else None
            photo = self._decode(path, MetadataRow(image_id, position[0], position[1], {"author": author}))
            if photo is not None:
                yield photo


def open_source(kind: str, **options) -> PhotoSource:
    """The source for a command-line `--source` value: csv, osv5m or exif."""
    kinds = {"csv": CsvPhotoSource, "osv5m": Osv5mPhotoSource, "exif": ExifFolderSource}
    if kind not in kinds:
        raise ValueError(f"unknown source kind {kind!r}; choose one of {sorted(kinds)}")
    return kinds[kind](**options)

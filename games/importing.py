"""Importing game images: Im2GPS metadata, photos from a folder, a zip or Flickr, attribution, and model guesses.

Every row is accounted for: created, updated, unchanged or skipped with a reason. Re-running an import updates
rows in place (keyed by the Im2GPS IMG_ID) and never duplicates them.
"""
from __future__ import annotations

import csv
import hashlib
import io
import math
import re
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction
from PIL import Image, UnidentifiedImageError

from games import scoring
from games.licences import is_open_licence
from games.models import GameImage, ModelGuess

DEFAULT_MODEL_NAME = "ISNs(M, f*, S3)"
META_COLUMNS = ("IMG_ID", "LAT", "LON")
PREDICTION_COLUMNS = ("img_id", "predicted_lat", "predicted_long")
# The published results files, by file stem, and the model names the paper gives them.
PUBLISHED_MODEL_NAMES = {
    "ISNs_M-fstar-S3": "ISNs(M, f*, S3)",
    "base_M-fstar": "base(M, f*)",
    "base_M-m": "base(M, m)",
    "base_L-m": "base(L, m)",
    "base-vgg_L-m": "base-vgg(L, m)",
    "base-vgg-c_L-m": "base-vgg-c(L, m)",
}
IMAGE_FORMATS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp"}
MAX_IMAGE_BYTES = 25 * 1024 * 1024
MAX_IMAGE_PIXELS = 60_000_000
DOWNLOAD_TIMEOUT_S = 15
# After this many connection failures in one run, stop trying: the network is down, not the photo gone.
MAX_NETWORK_FAILURES = 3


class ImportFailed(Exception):
    """The import cannot start: a file is missing or is not in the expected format."""


@dataclass
class ImportReport:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    guesses_created: int = 0
    guesses_updated: int = 0
    guesses_skipped: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    network_failures: int = 0
    refused_entries: list[tuple[str, str]] = field(default_factory=list)  # zip entries that were not read
    outcomes: list[tuple[str, str]] = field(default_factory=list)  # (IMG_ID, "created"/"updated"/"unchanged")
    saved_files: list[str] = field(default_factory=list)  # photo files this run added to the storage
    dry_run: bool = False
    rolled_back: bool = False

    def skip(self, what: str, reason: str) -> None:
        self.skipped.append((what, reason))

    @property
    def has_errors(self) -> bool:
        """Whether any row, guess or zip entry was refused (a strict import then changes nothing)."""
        return bool(self.skipped or self.guesses_skipped or self.refused_entries)

    def lines(self) -> list[str]:
        out = [f"images: {self.created} created, {self.updated} updated, {self.unchanged} unchanged, "
               f"{len(self.skipped)} skipped"]
        out += [f"  skipped {what}: {reason}" for what, reason in self.skipped]
        if self.guesses_created or self.guesses_updated or self.guesses_skipped:
            out.append(f"model guesses: {self.guesses_created} created, {self.guesses_updated} updated, "
                       f"{len(self.guesses_skipped)} skipped")
            out += [f"  skipped guess {what}: {reason}" for what, reason in self.guesses_skipped]
        out += self.notes
        return out


@dataclass
class MetaRow:
    img_id: str
    lat: float
    lon: float
    author: str = ""
    p_indoor: float | None = None
    p_natural: float | None = None
    p_urban: float | None = None


@dataclass
class Attribution:
    url: str = ""
    available: bool = True
    author: str = ""
    licence_name: str = ""
    licence_url: str = ""


@dataclass
class Prediction:
    img_id: str
    lat: float
    lon: float


# --- reading the files ------------------------------------------------------------------------------------------

def _rows(path: Path, required: tuple[str, ...]):
    """DictReader rows of a CSV, stopping at the first blank line (the results files end with a summary block)."""
    path = Path(path)
    if not path.is_file():
        raise ImportFailed(f"{path} does not exist")
    text = path.read_text(encoding="utf-8-sig", errors="replace")
    lines = []
    for line in text.splitlines():
        if not line.strip():
            break
        lines.append(line)
    reader = csv.DictReader(lines)
    header = [name.strip() for name in (reader.fieldnames or [])]
    missing = [name for name in required if name not in header]
    if missing:
        raise ImportFailed(f"{path.name} lacks the column(s) {', '.join(missing)} (has: {', '.join(header)})")
    reader.fieldnames = header
    for number, row in enumerate(reader, start=2):
        yield number, {k: (v or "").strip() for k, v in row.items() if k is not None}


def _float(value: str) -> float:
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{value!r} is not a finite number")
    return number


def _optional_float(value: str) -> float | None:
    return _float(value) if value not in ("", None) else None


def read_meta(path: Path, report: ImportReport | None = None) -> list[MetaRow]:
    """Rows of an Im2GPS metadata file (IMG_ID, AUTHOR, LAT, LON, ..., Prob_indoor, Prob_natural, Prob_urban)."""
    report = report if report is not None else ImportReport()
    rows = []
    numbered = list(_rows(path, META_COLUMNS))
    lines_of: dict[str, list[int]] = {}
    for number, row in numbered:
        lines_of.setdefault(row.get("IMG_ID", ""), []).append(number)
    for number, row in numbered:
        img_id = row.get("IMG_ID", "")
        label = img_id or f"line {number}"
        if not img_id or "/" in img_id or "\\" in img_id:
            report.skip(label, f"bad row at line {number}: missing or invalid IMG_ID")
            continue
        if len(lines_of[img_id]) > 1:
            # Which of the rows is right cannot be known: none of them is imported.
            lines = ", ".join(str(n) for n in lines_of[img_id])
            report.skip(label, f"duplicated IMG_ID at line {number} (it appears on lines {lines})")
            continue
        try:
            lat, lon = _float(row["LAT"]), _float(row["LON"])
            probs = [_optional_float(row.get(name, "")) for name in ("Prob_indoor", "Prob_natural", "Prob_urban")]
        except ValueError:
            report.skip(label, f"bad row at line {number}: a coordinate or probability is not a number")
            continue
        if not scoring.valid_coordinate(lat, lon):
            report.skip(label, f"coordinates out of range at line {number}: {lat}, {lon}")
            continue
        # The published probabilities carry float noise (1.00000008): tolerate it, then clamp.
        if any(p is not None and not -1e-6 <= p <= 1.0 + 1e-6 for p in probs):
            report.skip(label, f"bad row at line {number}: a scene probability is outside [0, 1]")
            continue
        probs = [None if p is None else min(1.0, max(0.0, p)) for p in probs]
        rows.append(MetaRow(img_id, lat, lon, row.get("AUTHOR", ""), *probs))
    return rows


def read_attribution(path: Path) -> dict[str, Attribution]:
    """The demo's scene_M_p_im2gps.csv columns url, available, author, license_name, license_url by img_id."""
    out = {}
    for _number, row in _rows(path, ("img_id", "license_name")):
        out[row["img_id"]] = Attribution(
            url=row.get("url", ""), available=row.get("available", "1") == "1", author=row.get("author", ""),
            licence_name=row.get("license_name", ""), licence_url=row.get("license_url", ""))
    return out


def read_predictions(path: Path, report: ImportReport | None = None) -> list[Prediction]:
    """A published results file: img_id, gt_lat, predicted_lat, gt_long, predicted_long, great_circle_distance."""
    report = report if report is not None else ImportReport()
    out = []
    for number, row in _rows(path, PREDICTION_COLUMNS):
        try:
            lat, lon = _float(row["predicted_lat"]), _float(row["predicted_long"])
        except ValueError:
            report.guesses_skipped.append((row.get("img_id") or f"line {number}", f"bad row at line {number}"))
            continue
        if not scoring.valid_coordinate(lat, lon):
            report.guesses_skipped.append((row["img_id"], f"coordinates out of range at line {number}"))
            continue
        out.append(Prediction(row["img_id"], lat, lon))
    return out


def model_name_for(path: Path) -> str:
    """The paper's name for a published results file (ISNs_M-fstar-S3.csv -> "ISNs(M, f*, S3)"), else its stem."""
    stem = Path(path).stem
    return PUBLISHED_MODEL_NAMES.get(stem, stem)


# --- finding the photos -----------------------------------------------------------------------------------------

class PhotoSource:
    """Photos by IMG_ID from a folder or a zip archive; zip entries that try to leave the archive are refused."""

    def __init__(self, location: Path | None, report: ImportReport):
        self.location = Path(location) if location else None
        self._zip: zipfile.ZipFile | None = None
        self._entries: dict[str, zipfile.ZipInfo] = {}
        if self.location is None:
            return
        if self.location.is_dir():
            return
        if not self.location.is_file():
            raise ImportFailed(f"{self.location} is neither a folder nor a zip file")
        try:
            self._zip = zipfile.ZipFile(self.location)
        except zipfile.BadZipFile:
            raise ImportFailed(f"{self.location} is not a valid zip file") from None
        for info in self._zip.infolist():
            if info.is_dir():
                continue
            if not _safe_entry(info.filename):
                report.notes.append(f"refused zip entry {info.filename!r}: unsafe path")
                report.refused_entries.append((info.filename, "unsafe path (absolute, or leaves the archive)"))
                continue
            self._entries.setdefault(PurePosixPath(info.filename).name, info)

    def read(self, img_id: str) -> bytes | None:
        if self.location is None:
            return None
        if self._zip is not None:
            info = self._entries.get(img_id)
            if info is None:
                return None
            if info.file_size > MAX_IMAGE_BYTES:
                raise ValueError(f"larger than {MAX_IMAGE_BYTES} bytes")
            return self._zip.read(info)
        path = self.location / img_id
        if not path.is_file():
            return None
        if path.stat().st_size > MAX_IMAGE_BYTES:
            raise ValueError(f"larger than {MAX_IMAGE_BYTES} bytes")
        return path.read_bytes()

    def names(self) -> list[str]:
        return list(self._entries)

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()


def _safe_entry(name: str) -> bool:
    if "\\" in name or name.startswith("/") or re.match(r"^[A-Za-z]:", name) or "\x00" in name:
        return False
    return ".." not in PurePosixPath(name).parts


_FLICKR_ID = re.compile(r"(?P<id>\d+)_(?P<secret>[0-9a-f]+)_(?P<server>\d+)_(?P<owner>[^_/]+@N\d+)\.jpe?g$")


def flickr_url(img_id: str) -> str | None:
    """The Flickr static URL an Im2GPS IMG_ID encodes (`...<id>_<secret>_<server>_<owner>.jpg`), if it does."""
    match = _FLICKR_ID.search(img_id)
    if not match:
        return None
    return f"https://live.staticflickr.com/{match['server']}/{match['id']}_{match['secret']}.jpg"


def download(url: str, *, timeout: float = DOWNLOAD_TIMEOUT_S, max_bytes: int = MAX_IMAGE_BYTES) -> bytes:
    request = urllib.request.Request(url, headers={"User-Agent": "GeoWeb game-image import"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        data = response.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ValueError(f"larger than {max_bytes} bytes")
    return data


def verified_image(data: bytes) -> str:
    """The file extension for image bytes Pillow can fully decode; ValueError for anything else."""
    try:
        with Image.open(io.BytesIO(data)) as probe:
            probe.verify()
        with Image.open(io.BytesIO(data)) as image:
            if image.width * image.height > MAX_IMAGE_PIXELS:
                raise ValueError(f"more than {MAX_IMAGE_PIXELS} pixels")
            if image.format not in IMAGE_FORMATS:
                raise ValueError(f"unsupported format {image.format}")
            image.load()
            return IMAGE_FORMATS[image.format]
    except UnidentifiedImageError:
        raise ValueError("corrupt image (not a JPEG, PNG or WebP file)") from None
    except (OSError, SyntaxError, Image.DecompressionBombError) as error:
        raise ValueError(f"corrupt image ({error})") from None


# --- the import -------------------------------------------------------------------------------------------------

def import_im2gps(*, meta_path: Path, images: Path | None = None, attribution_path: Path | None = None,
                  predictions_path: Path | None = None, model_name: str = DEFAULT_MODEL_NAME,
                  download_missing: bool = False, progress=None, dry_run: bool = False,
                  strict: bool = False) -> ImportReport:
    """Create or update GameImages from Im2GPS metadata, then ModelGuesses from a results file.

    The whole import is one transaction. `dry_run` works everything out (the preview) and then rolls it back,
    storing no photo; `strict` rolls back everything when any row, guess or zip entry is refused.
    """
    report = ImportReport(dry_run=dry_run)
    rows = read_meta(meta_path, report)
    attribution = read_attribution(attribution_path) if attribution_path else {}
    predictions = read_predictions(predictions_path, report) if predictions_path else []
    source = PhotoSource(images, report)
    try:
        with transaction.atomic():
            for number, row in enumerate(rows, start=1):
                _import_row(row, attribution.get(row.img_id), source, report, download_missing)
                if progress and number % 50 == 0:
                    progress(f"{number}/{len(rows)} rows")
            if predictions:
                _import_predictions(predictions, model_name, report)
            if dry_run or (strict and report.has_errors):
                report.rolled_back = True
                transaction.set_rollback(True)
    except BaseException:
        _forget_files(report)
        raise
    finally:
        source.close()
    if report.rolled_back:
        _forget_files(report)
    return report


def _forget_files(report: ImportReport) -> None:
    # Photos are stored before their rows commit; when the rows do not commit, neither do the files.
    for name in report.saved_files:
        if not GameImage.objects.filter(image=name).exists():
            default_storage.delete(name)
    report.saved_files = []


def _import_row(row: MetaRow, attribution: Attribution | None, source: PhotoSource, report: ImportReport,
                download_missing: bool) -> None:
    existing = GameImage.objects.filter(source_id=row.img_id).first()
    try:
        data = source.read(row.img_id)
    except (ValueError, OSError) as error:
        report.skip(row.img_id, f"unreadable image file: {error}")
        return
    if data is None and download_missing and (existing is None or not existing.image):
        url = (attribution.url if attribution and attribution.url else "") or flickr_url(row.img_id)
        if not url:
            report.skip(row.img_id, "missing image file, and the IMG_ID names no Flickr photo to download")
            return
        if report.network_failures >= MAX_NETWORK_FAILURES:
            report.skip(row.img_id, "not downloaded: the network failed repeatedly earlier in this run")
            return
        try:
            data = download(url)
        except (urllib.error.HTTPError, ValueError) as error:
            report.skip(row.img_id, f"download failed from {url}: {error}")
            return
        except (urllib.error.URLError, OSError) as error:
            report.network_failures += 1
            report.skip(row.img_id, f"download failed from {url}: {error}")
            return
    name = None
    if data is not None:
        try:
            extension = verified_image(data)
        except ValueError as error:
            report.skip(row.img_id, str(error))
            return
        name = f"game_images/{hashlib.sha256(data).hexdigest()[:32]}{extension}"
    elif existing is None or not existing.image:
        report.skip(row.img_id, "missing image file")
        return

    values = {"lat": row.lat, "lon": row.lon, "p_indoor": row.p_indoor, "p_natural": row.p_natural,
              "p_urban": row.p_urban, "author": row.author}
    if attribution is not None:
        values.update(author=attribution.author or row.author, licence_name=attribution.licence_name,
                      is_open_licence=is_open_licence(attribution.licence_name),
                      licence_url=attribution.licence_url, source_url=attribution.url)
    with transaction.atomic():
        if name is not None and not report.dry_run and not default_storage.exists(name):
            stored = default_storage.save(name, ContentFile(data))
            if stored != name:  # the storage renamed it: never expected for a content-addressed name
                raise RuntimeError(f"storage stored {name} as {stored}")
            report.saved_files.append(name)
        if name is not None:
            values["image"] = name
        if existing is None:
            GameImage.objects.create(source_id=row.img_id, **values)
            report.created += 1
            report.outcomes.append((row.img_id, "created"))
            return
        changed = [key for key, value in values.items() if _differs(getattr(existing, key), value)]
        if not changed:
            report.unchanged += 1
            report.outcomes.append((row.img_id, "unchanged"))
            return
        for key in changed:
            setattr(existing, key, values[key])
        existing.save(update_fields=changed + ["updated_at"])
        report.updated += 1
        report.outcomes.append((row.img_id, "updated"))


def _differs(current, new) -> bool:
    if hasattr(current, "name"):  # a FieldFile
        current = current.name
    if isinstance(current, float) and isinstance(new, float):
        return not math.isclose(current, new, rel_tol=0, abs_tol=1e-9)
    return current != new


def _import_predictions(predictions: list[Prediction], model_name: str, report: ImportReport) -> None:
    images = {image.source_id: image for image in
              GameImage.objects.filter(source_id__in=[p.img_id for p in predictions])}
    existing = {guess.image_id: guess for guess in
                ModelGuess.objects.filter(model_name=model_name, image__in=images.values())}
    with transaction.atomic():
        for prediction in predictions:
            image = images.get(prediction.img_id)
            if image is None:
                report.guesses_skipped.append((prediction.img_id, "no game image with this IMG_ID"))
                continue
            distance = scoring.error_km(true_lat=image.lat, true_lon=image.lon, lat=prediction.lat,
                                        lon=prediction.lon)
            guess = existing.get(image.id)
            if guess is None:
                ModelGuess.objects.create(image=image, model_name=model_name, lat=prediction.lat,
                                          lon=prediction.lon, distance_km=distance)
                report.guesses_created += 1
            elif (guess.lat, guess.lon, guess.distance_km) != (prediction.lat, prediction.lon, distance):
                guess.lat, guess.lon, guess.distance_km = prediction.lat, prediction.lon, distance
                guess.save(update_fields=["lat", "lon", "distance_km"])
                report.guesses_updated += 1


# --- the `make run` import --------------------------------------------------------------------------------------

@dataclass
class FolderLayout:
    meta: Path | None = None
    attribution: Path | None = None
    predictions: list[Path] = field(default_factory=list)
    images: Path | None = None


def _header(path: Path) -> list[str]:
    with open(path, encoding="utf-8-sig", errors="replace") as handle:
        return [name.strip() for name in handle.readline().split(",")]


def find_layout(folder: Path) -> FolderLayout:
    """Recognise a game-images folder: the CSVs by their headers, the photos as images/ or the one zip file."""
    layout = FolderLayout()
    for path in sorted(folder.glob("*.csv")):
        header = _header(path)
        if "IMG_ID" in header and "LAT" in header:
            layout.meta = layout.meta or path
        elif "license_name" in header:
            layout.attribution = path
        elif "predicted_lat" in header:
            layout.predictions.append(path)
    if (folder / "images").is_dir():
        layout.images = folder / "images"
    else:
        zips = sorted(folder.glob("*.zip"))
        layout.images = zips[0] if zips else None
    return layout


def import_folder(folder: Path, *, progress=None) -> ImportReport:
    """Import a game-images folder (see docs/play.md for the layout) with every results file in it."""
    layout = find_layout(folder)
    if layout.meta is None:
        raise ImportFailed(f"{folder} holds no metadata CSV (a file with the columns IMG_ID, LAT, LON)")
    if layout.images is None:
        raise ImportFailed(f"{folder} holds neither an images/ folder nor a zip of photos")
    report = import_im2gps(meta_path=layout.meta, images=layout.images, attribution_path=layout.attribution,
                           progress=progress)
    for path in layout.predictions:
        extra = ImportReport()
        _import_predictions(read_predictions(path, extra), model_name_for(path), extra)
        report.guesses_created += extra.guesses_created
        report.guesses_updated += extra.guesses_updated
        report.guesses_skipped += extra.guesses_skipped
    return report


def fetch_zip(url: str, destination: Path, *, timeout: float = 10) -> Path:
    """Download the Im2GPS query-image zip once; raises OSError (URLError) when the network is unavailable."""
    if destination.is_file() and zipfile.is_zipfile(destination):
        return destination
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_suffix(".part")
    request = urllib.request.Request(url, headers={"User-Agent": "GeoWeb game-image import"})
    with urllib.request.urlopen(request, timeout=timeout) as response, open(partial, "wb") as out:
        while chunk := response.read(1 << 20):
            out.write(chunk)
    if not zipfile.is_zipfile(partial):
        partial.unlink()
        raise ImportFailed(f"{url} did not return a zip file")
    partial.replace(destination)
    return destination


def import_default(*, folder: Path, zip_url: str, timeout: float = 10) -> list[str]:
    """The `make run` import: the folder's data if present, the Im2GPS zip if reachable; lines to print, no raise."""
    folder = Path(folder)
    lines = [f"game images: looking in {folder}"]
    layout = find_layout(folder) if folder.is_dir() else FolderLayout()
    if layout.images is None and zip_url:
        try:
            layout.images = fetch_zip(zip_url, folder / "gps_query_imgs.zip", timeout=timeout)
            lines.append(f"downloaded {zip_url}")
        except (OSError, ImportFailed) as error:
            lines.append(f"network unavailable or download refused ({zip_url}: {error}); no photos fetched")
    if layout.meta is None:
        lines.append(
            f"no metadata CSV in {folder}: game images were not imported. Put im2gps_places365.csv (IMG_ID, LAT, "
            "LON, ...), optionally scene_M_p_im2gps.csv and a results file such as ISNs_M-fstar-S3.csv, and the "
            "photos (images/ or a zip) there, or set GEOWEB_GAME_IMAGES; see docs/play.md.")
        return lines
    if layout.images is None:
        lines.append(f"no photos in {folder} (images/ or a zip): game images were not imported; see docs/play.md.")
        return lines
    try:
        report = import_folder(folder)
    except ImportFailed as error:
        return lines + [f"game images were not imported: {error}"]
    return lines + report.lines()

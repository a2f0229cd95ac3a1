"""Importing game images: Im2GPS photos from a folder, a zip or Flickr, their truth and attribution (from the
photos' own JPEG comments, or a metadata CSV), and the models' published answers.

Every row is accounted for: created, updated, unchanged or skipped with a reason. Re-running an import updates
rows in place (keyed by the Im2GPS IMG_ID, the photo's file name) and never duplicates them. Every photo passes the
image door (core/images.py): only the cleaned copy, under a content-hash name, is stored; never the original.

The files are read by core.im2gps, which the evaluation shares: this import is its lenient user (a bad row is
skipped and reported, the rest imported).
"""
from __future__ import annotations

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

from core import im2gps, images
from games import licences, scoring
from games.models import GameImage, ModelGuess

DEFAULT_MODEL_NAME = "ISNs(M, f*, S3)"
# The published results files, by file stem, and the model names the paper gives them.
PUBLISHED_MODEL_NAMES = {
    "ISNs_M-fstar-S3": "ISNs(M, f*, S3)",
    "base_M-fstar": "base(M, f*)",
    "base_M-m": "base(M, m)",
    "base_L-m": "base(L, m)",
    "base-vgg_L-m": "base-vgg(L, m)",
    "base-vgg-c_L-m": "base-vgg-c(L, m)",
}
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
MAX_IMAGE_BYTES = images.GAME_PHOTO_MAX_BYTES
DOWNLOAD_TIMEOUT_S = 15
# After this many connection failures in one run, stop trying: the network is down, not the photo gone.
MAX_NETWORK_FAILURES = 3
# A CSV and a photo's comments that differ by more than this (degrees) disagree about the truth.
POSITION_TOLERANCE_DEG = 1e-5
NO_SUCH_IMAGE = "no game image with this IMG_ID"
MAX_LISTED = 25  # per kind of message in a printed report; the rest are counted


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
    # (IMG_ID, "latitude: CSV 19.1, photo 19.2"): where the metadata CSV and the photo's comments differ.
    disagreements: list[tuple[str, str]] = field(default_factory=list)
    # (IMG_ID, ["title", "datetaken"]): the comment fields a photo lacks.
    incomplete: list[tuple[str, list[str]]] = field(default_factory=list)
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
        out += _listed([f"  skipped {what}: {reason}" for what, reason in self.skipped])
        if self.guesses_created or self.guesses_updated or self.guesses_skipped:
            out.append(f"model guesses: {self.guesses_created} created, {self.guesses_updated} updated, "
                       f"{len(self.guesses_skipped)} skipped")
            unmatched = [what for what, reason in self.guesses_skipped if reason == NO_SUCH_IMAGE]
            if unmatched:
                out.append(f"  {len(unmatched)} answer(s) are for photos that are not game images (e.g. "
                           f"{', '.join(unmatched[:2])})")
            out += _listed([f"  skipped guess {what}: {reason}" for what, reason in self.guesses_skipped
                            if reason != NO_SUCH_IMAGE])
        if self.disagreements:
            out.append(f"the metadata CSV and the photos' comments disagree {len(self.disagreements)} time(s); "
                       "the CSV was used:")
            out += _listed([f"  {what}: {detail}" for what, detail in self.disagreements])
        if self.incomplete:
            out.append(f"{len(self.incomplete)} photo(s) lack some comment fields:")
            out += _listed([f"  {what}: missing {', '.join(fields)}" for what, fields in self.incomplete])
        out += self.notes
        return out


def _listed(lines: list[str]) -> list[str]:
    if len(lines) <= MAX_LISTED:
        return lines
    return lines[:MAX_LISTED] + [f"  … and {len(lines) - MAX_LISTED} more"]


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


# --- reading the files (core.im2gps, leniently) ------------------------------------------------------------------

def _format_error(error: im2gps.Im2gpsFormatError) -> ImportFailed:
    message = str(error)
    if "file not found" in message:
        message = message.replace("file not found", "does not exist")
    return ImportFailed(message)


def read_meta(path: Path, report: ImportReport | None = None) -> list[im2gps.MetaRow]:
    """The good rows of an Im2GPS metadata file; each bad row is skipped with its line and reason."""
    report = report if report is not None else ImportReport()
    try:
        parsed = im2gps.read_meta(path)
    except im2gps.Im2gpsFormatError as error:
        raise _format_error(error) from None
    for problem in parsed.problems:
        report.skip(problem.img_id, f"bad row at line {problem.line}: {problem.message}")
    return parsed.rows


def read_attribution(path: Path) -> dict[str, Attribution]:
    """The demo's scene_M_p_im2gps.csv columns url, available, author, license_name, license_url by img_id."""
    import csv

    path = Path(path)
    if not path.is_file():
        raise ImportFailed(f"{path} does not exist")
    with open(path, encoding="utf-8-sig", errors="replace", newline="") as handle:
        reader = csv.DictReader(handle)
        header = [name.strip() for name in reader.fieldnames or []]
        missing = [name for name in ("img_id", "license_name") if name not in header]
        if missing:
            raise ImportFailed(f"{path.name} lacks the column(s) {', '.join(missing)} (has: {', '.join(header)})")
        reader.fieldnames = header
        out = {}
        for row in reader:
            row = {k: (v or "").strip() for k, v in row.items() if k is not None}
            if row.get("img_id"):
                out[row["img_id"]] = Attribution(
                    url=row.get("url", ""), available=row.get("available", "1") == "1", author=row.get("author", ""),
                    licence_name=row.get("license_name", ""), licence_url=row.get("license_url", ""))
    return out


def read_predictions(path: Path, report: ImportReport | None = None) -> list[Prediction]:
    """A published results file's predicted positions; each bad row is skipped with its line and reason."""
    report = report if report is not None else ImportReport()
    try:
        parsed = im2gps.read_results(path)
    except im2gps.Im2gpsFormatError as error:
        raise _format_error(error) from None
    for problem in parsed.problems:
        report.guesses_skipped.append((problem.img_id, f"bad row at line {problem.line}: {problem.message}"))
    return [Prediction(row.img_id, row.predicted_lat, row.predicted_lon) for row in parsed.rows]


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
        """Every file name the source holds (a folder's files, a zip's safe entries), sorted."""
        if self.location is not None and self.location.is_dir():
            return sorted(path.name for path in self.location.iterdir() if path.is_file())
        return sorted(self._entries)

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


# --- the import -------------------------------------------------------------------------------------------------

@dataclass
class _Photo:
    """What the import knows of one photo before it is stored."""

    img_id: str
    lat: float
    lon: float
    author: str = ""
    title: str = ""
    date_taken: str = ""
    licence_name: str = ""
    licence_url: str = ""
    source_url: str = ""
    scene: tuple = (None, None, None)
    has_attribution: bool = False


def import_im2gps(*, meta_path: Path | None = None, images: Path | None = None, attribution_path: Path | None = None,
                  predictions_path: Path | None = None, model_name: str = DEFAULT_MODEL_NAME,
                  download_missing: bool = False, progress=None, dry_run: bool = False,
                  strict: bool = False) -> ImportReport:
    """Create or update GameImages from Im2GPS photos, then ModelGuesses from a results file.

    Without `meta_path`, every photo in `images` is imported from its own JPEG comments (truth, owner, title,
    licence, photo page, date taken). With it, the CSV's rows are imported and the CSV wins for the truth and the
    scene probabilities; every disagreement with the photo's comments is reported. An attribution CSV, when
    given, wins for the attribution.

    The whole import is one transaction. `dry_run` works everything out (the preview) and then rolls it back,
    storing no photo; `strict` rolls back everything when any row, guess or zip entry is refused.
    """
    if meta_path is None and images is None:
        raise ImportFailed("give the photos (a folder or a zip), a metadata CSV, or both")
    report = ImportReport(dry_run=dry_run)
    rows = {row.img_id: row for row in read_meta(meta_path, report)} if meta_path else None
    attribution = read_attribution(attribution_path) if attribution_path else {}
    predictions = read_predictions(predictions_path, report) if predictions_path else []
    source = PhotoSource(images, report)
    ids = list(rows) if rows is not None else [name for name in source.names()
                                               if name.lower().endswith(PHOTO_SUFFIXES)]
    if rows is None and not ids:
        source.close()
        raise ImportFailed(f"{images} holds no photos (.jpg, .jpeg, .png or .webp files)")
    try:
        with transaction.atomic():
            for number, img_id in enumerate(ids, start=1):
                _import_one(img_id, rows.get(img_id) if rows is not None else None, attribution.get(img_id), source,
                            report, download_missing=download_missing, from_csv=rows is not None)
                if progress and number % 50 == 0:
                    progress(f"{number}/{len(ids)} photos")
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


def _fetch(img_id: str, attribution: Attribution | None, report: ImportReport) -> bytes | None:
    url = (attribution.url if attribution and attribution.url else "") or flickr_url(img_id)
    if not url:
        report.skip(img_id, "missing image file, and the IMG_ID names no Flickr photo to download")
        return None
    if report.network_failures >= MAX_NETWORK_FAILURES:
        report.skip(img_id, "not downloaded: the network failed repeatedly earlier in this run")
        return None
    try:
        return download(url)
    except (urllib.error.HTTPError, ValueError) as error:
        report.skip(img_id, f"download failed from {url}: {error}")
    except (urllib.error.URLError, OSError) as error:
        report.network_failures += 1
        report.skip(img_id, f"download failed from {url}: {error}")
    return None


def _import_one(img_id: str, row: im2gps.MetaRow | None, attribution: Attribution | None, source: PhotoSource,
                report: ImportReport, *, download_missing: bool, from_csv: bool) -> None:
    existing = GameImage.objects.filter(source_id=img_id).first()
    try:
        data = source.read(img_id)
    except (ValueError, OSError) as error:
        report.skip(img_id, f"unreadable image file: {error}")
        return
    if data is None and download_missing and (existing is None or not existing.image):
        data = _fetch(img_id, attribution, report)
        if data is None:
            return
    if data is None and (existing is None or not existing.image):
        report.skip(img_id, "missing image file")
        return
    photo = _describe(img_id, row, data, report, from_csv=from_csv)
    if photo is None:
        return
    clean = None
    if data is not None:
        try:
            clean = images.clean_game_photo(data)
        except images.RejectedImage as error:
            report.skip(img_id, f"corrupt image or not a photo: {error.message}")
            return
    values = {"lat": photo.lat, "lon": photo.lon, "p_indoor": photo.scene[0], "p_natural": photo.scene[1],
              "p_urban": photo.scene[2]}
    if attribution is not None:
        photo.author = attribution.author or photo.author
        photo.licence_name, photo.licence_url = attribution.licence_name, attribution.licence_url
        photo.source_url = attribution.url or photo.source_url
        photo.has_attribution = True
    values["author"] = photo.author
    if photo.has_attribution:
        values.update(title=photo.title, date_taken=photo.date_taken, licence_name=photo.licence_name,
                      licence_url=photo.licence_url, source_url=photo.source_url,
                      **licences.licence_fields(photo.licence_name))
    if clean is not None:
        values["image"] = store_photo(clean, report)
    _save(img_id, existing, values, report)


def store_photo(clean: images.CleanPhoto, report: ImportReport | None = None) -> str:
    """Store a cleaned photo under its content-hash name (once); returns the storage name."""
    name = f"game_images/{clean.name}"
    if report is not None and report.dry_run:
        return name
    if not default_storage.exists(name):
        stored = default_storage.save(name, ContentFile(clean.data))
        if stored != name:  # the storage renamed it: never expected for a content-addressed name
            raise RuntimeError(f"storage stored {name} as {stored}")
        if report is not None:
            report.saved_files.append(name)
    return name


def _describe(img_id: str, row: im2gps.MetaRow | None, data: bytes | None, report: ImportReport, *,
              from_csv: bool) -> _Photo | None:
    """The truth and attribution of a photo: the CSV row for the truth and scene when there is one, the photo's
    comments for the rest (and for the truth without a CSV)."""
    comments = im2gps.read_photo_comments(data) if data is not None else None
    carries_comments = bool(comments and comments.fields)
    if row is None:
        position = comments.position if comments else None
        if position is None:
            missing = [name for name in ("latitude", "longitude") if comments is None or name in comments.missing]
            reason = f"missing {', '.join(missing)}" if missing else "; ".join(comments.problems) or "unreadable"
            report.skip(img_id, f"no true position: the photo's comments give none ({reason}), and no metadata "
                                "CSV was given")
            return None
        photo = _Photo(img_id, *position)
    else:
        photo = _Photo(img_id, row.lat, row.lon, author=row.author, scene=(row.p_indoor, row.p_natural, row.p_urban))
    if not carries_comments:
        return photo
    if comments.missing:
        report.incomplete.append((img_id, comments.missing))
    for problem in comments.problems:
        report.notes.append(f"{img_id}: {problem}")
    if row is not None:
        for name, csv_value in (("latitude", row.lat), ("longitude", row.lon)):
            value = comments.number(name)
            if value is not None and abs(value - csv_value) > POSITION_TOLERANCE_DEG:
                report.disagreements.append((img_id, f"{name}: CSV {csv_value}, photo comment {value}"))
        if row.author and comments.owner and row.author != comments.owner:
            report.disagreements.append((img_id, f"owner: CSV {row.author!r}, photo comment {comments.owner!r}"))
    licence = licences.flickr_licence(comments.licence_id)
    photo.author = comments.owner or photo.author
    photo.title, photo.date_taken, photo.source_url = comments.title, comments.date_taken, comments.photo_page
    if licence is not None:
        photo.licence_name, photo.licence_url = licence.name, licence.url
    elif comments.fields.get("license"):
        report.notes.append(f"{img_id}: unknown Flickr licence id {comments.fields['license']!r}")
    photo.has_attribution = True
    return photo


def _save(img_id: str, existing: GameImage | None, values: dict, report: ImportReport) -> None:
    if existing is None:
        GameImage.objects.create(source_id=img_id, **values)
        report.created += 1
        report.outcomes.append((img_id, "created"))
        return
    changed = [key for key, value in values.items() if _differs(getattr(existing, key), value)]
    if not changed:
        report.unchanged += 1
        report.outcomes.append((img_id, "unchanged"))
        return
    for key in changed:
        setattr(existing, key, values[key])
    existing.save(update_fields=changed + ["updated_at"])
    report.updated += 1
    report.outcomes.append((img_id, "updated"))


def _differs(current, new) -> bool:
    if hasattr(current, "name"):  # a FieldFile
        current = current.name
    if isinstance(current, float) and isinstance(new, float):
        return not math.isclose(current, new, rel_tol=0, abs_tol=1e-9)
    return current != new


def _import_predictions(predictions: list[Prediction], model_name: str, report: ImportReport) -> None:
    images_by_id = {image.source_id: image for image in
                    GameImage.objects.filter(source_id__in=[p.img_id for p in predictions])}
    existing = {guess.image_id: guess for guess in
                ModelGuess.objects.filter(model_name=model_name, image__in=images_by_id.values())}
    with transaction.atomic():
        for prediction in predictions:
            image = images_by_id.get(prediction.img_id)
            if image is None:
                report.guesses_skipped.append((prediction.img_id, NO_SUCH_IMAGE))
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


def import_predictions_file(path: Path, *, model_name: str | None = None) -> ImportReport:
    """Store a results file's answers for the game images already imported (model name from the file name)."""
    report = ImportReport()
    with transaction.atomic():
        _import_predictions(read_predictions(path, report), model_name or model_name_for(path), report)
    return report


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
    """Import a game-images folder (see docs/play.md for the layout) with every results file in it; without a
    metadata CSV the photos' own comments give the truth."""
    layout = find_layout(folder)
    if layout.images is None:
        raise ImportFailed(f"{folder} holds neither an images/ folder nor a zip of photos")
    report = import_im2gps(meta_path=layout.meta, images=layout.images, attribution_path=layout.attribution,
                           progress=progress)
    for path in layout.predictions:
        extra = import_predictions_file(path)
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
    if layout.images is None:
        lines.append(f"no photos in {folder} (images/ or a zip): game images were not imported. Put the photos "
                     "there (their JPEG comments give the truth and attribution, or add im2gps_places365.csv), "
                     "with results files such as ISNs_M-fstar-S3.csv; see docs/play.md.")
        return lines
    try:
        report = import_folder(folder)
    except ImportFailed as error:
        return lines + [f"game images were not imported: {error}"]
    return lines + report.lines()

"""The starter pack: Im2GPS3k photos under CC BY 2.0 / CC BY-SA 2.0, cleaned by the image door and committed in
games/starter_pack/ with a manifest (truth, licence, owner, title, photo page, the paper's published answers), so
that a fresh install can be played at once, offline.

`build_pack` makes the pack from the source photos and results files (byte-identical when run twice);
`import_pack` loads it into the database (`manage.py import_game_images`, which `make run` calls).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from django.core.files.storage import default_storage
from django.db import transaction
from PIL import features

from core import im2gps, images
from games import licences, scoring
from games.importing import ImportReport, store_photo
from games.models import STARTER_PACK, GameImage, ModelGuess

PACK_DIR = Path(__file__).resolve().parent / "starter_pack"
MANIFEST = "manifest.json"
MAX_SIDE = 1024
FORMAT, QUALITY = "WEBP", 75
MAX_PACK_BYTES = 20 * 1000 * 1000
# The published answers the manifest carries, by results file stem, with the paper's model names.
ANSWER_FILES = {"ISNs_M-fstar-S3": "ISNs(M, f*, S3)", "base_M-fstar": "base(M, f*)"}


class PackError(Exception):
    """The pack cannot be built or read; the message says which file and why."""


@dataclass
class BuildResult:
    photos: int = 0
    total_bytes: int = 0
    refused: list[tuple[str, str]] = field(default_factory=list)


def build_pack(*, source: Path, results: Path, out: Path = PACK_DIR) -> BuildResult:
    """Re-encode every photo of `source` whose embedded licence is open (games.licences) into `out/photos/`,
    and write the manifest and the pack's README. Photos with a closed licence, without a position or without
    both published answers are refused and listed. Files in `out/photos/` that are not part of the pack are
    removed, so the folder holds exactly what the manifest lists."""
    source, results, out = Path(source), Path(results), Path(out)
    if not source.is_dir():
        raise PackError(f"{source}: not a folder of photos")
    answers = {}
    for stem, model in ANSWER_FILES.items():
        try:
            parsed = im2gps.read_results(results / f"{stem}.csv")
        except im2gps.Im2gpsFormatError as error:
            raise PackError(str(error)) from None
        if parsed.problems:
            raise PackError(str(parsed.problems[0]))
        answers[model] = {row.img_id: row for row in parsed.rows}
    result = BuildResult()
    entries, files = [], {}
    for path in sorted(p for p in source.iterdir() if p.suffix.lower() in (".jpg", ".jpeg")):
        data = path.read_bytes()
        comments = im2gps.read_photo_comments(data)
        licence = licences.flickr_licence(comments.licence_id)
        if licence is None or licences.licence_kind(licence.name) != licences.OPEN:
            result.refused.append((path.name, f"licence {licence.name if licence else 'unknown'} is not open"))
            continue
        if comments.position is None:
            result.refused.append((path.name, "the photo's comments give no position"))
            continue
        missing = [model for model in answers if path.name not in answers[model]]
        if missing:
            result.refused.append((path.name, f"no published answer of {', '.join(missing)}"))
            continue
        clean = images.clean_game_photo(data, max_side=MAX_SIDE, format=FORMAT, quality=QUALITY)
        files[clean.name] = clean.data
        lat, lon = comments.position
        entries.append({
            "id": path.name, "file": f"photos/{clean.name}", "sha256": clean.sha256,
            "width": clean.width, "height": clean.height, "lat": lat, "lon": lon,
            "licence": {"name": licence.name, "url": licence.url, "flickr_licence_id": comments.licence_id},
            "owner": comments.owner, "title": comments.title, "date_taken": comments.date_taken,
            "photo_page": comments.photo_page,
            "answers": {model: {"lat": answers[model][path.name].predicted_lat,
                                "lon": answers[model][path.name].predicted_lon} for model in answers},
        })
    result.photos, result.total_bytes = len(entries), sum(len(data) for data in files.values())
    if result.total_bytes > MAX_PACK_BYTES:
        raise PackError(f"the pack would hold {result.total_bytes / 1e6:.1f} MB; at most "
                        f"{MAX_PACK_BYTES / 1e6:.0f} MB")
    photos_dir = out / "photos"
    photos_dir.mkdir(parents=True, exist_ok=True)
    for stale in photos_dir.iterdir():
        if stale.name not in files:
            stale.unlink()
    for name, data in sorted(files.items()):
        target = photos_dir / name
        if not target.is_file() or target.read_bytes() != data:
            target.write_bytes(data)
    manifest = {
        "about": "GeoWeb starter pack: Im2GPS3k photos (Vo, Jacobs, Hays, ICCV 2017) whose Flickr licence is CC BY "
                 "2.0 or CC BY-SA 2.0, re-encoded without metadata; each keeps its own licence (see README.md).",
        "answers_source": "Published per-image results of Mueller-Budack, Pustu-Iren, Ewerth, ECCV 2018 "
                          "(TIBHannover/GeoEstimation, results/im2gps3k, GPL-3.0).",
        "encoding": {"format": FORMAT, "max_side": MAX_SIDE, "quality": QUALITY, "method": 4,
                     "libwebp": features.version("webp")},
        "photos": entries,
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True, ensure_ascii=False) + "\n",
                                encoding="utf-8")
    (out / "README.md").write_text(_readme(entries), encoding="utf-8")
    return result


def _readme(entries: list[dict]) -> str:
    by_licence: dict[str, int] = {}
    for entry in entries:
        by_licence[entry["licence"]["name"]] = by_licence.get(entry["licence"]["name"], 0) + 1
    counts = ", ".join(f"{n} under {name}" for name, n in sorted(by_licence.items()))
    lines = [
        "# GeoWeb starter pack: photo credits and licences",
        "",
        f"{len(entries)} photos from the Im2GPS3k benchmark (Vo, Jacobs, Hays, \"Revisiting IM2GPS in the Deep "
        f"Learning Era\", ICCV 2017), originally published on Flickr: {counts}.",
        "",
        "**These photos are not under the code's licence.** Each photo keeps its own Creative Commons licence, "
        "named below with its author (the Flickr account), title and original page. The copies here are adaptations: "
        "resized to at most 1,024 px on the long side and re-encoded as WebP without metadata. Copies of CC BY-SA "
        "photos, and adaptations of them, stay under CC BY-SA 2.0.",
        "",
        "- CC BY 2.0: https://creativecommons.org/licenses/by/2.0/",
        "- CC BY-SA 2.0: https://creativecommons.org/licenses/by-sa/2.0/",
        "",
        "`manifest.json` lists each photo's file, true position, licence, owner, title, photo page and the published "
        "answers of ISNs(M, f*, S3) and base(M, f*) (Müller-Budack, Pustu-Iren, Ewerth, ECCV 2018; GPL-3.0). "
        "Rebuild the pack with `manage.py build_starter_pack` (docs/play.md).",
        "",
        "| file | title | author | licence | photo page |",
        "|---|---|---|---|---|",
    ]
    for entry in entries:
        title = (entry["title"] or "untitled").replace("|", "\\|")
        lines.append(f"| {entry['file']} | {title} | {entry['owner']} | {entry['licence']['name']} | "
                     f"{entry['photo_page']} |")
    return "\n".join(lines) + "\n"


def read_manifest(pack_dir: Path = PACK_DIR) -> dict:
    path = Path(pack_dir) / MANIFEST
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PackError(f"{path}: the starter pack's manifest is missing") from None
    except ValueError as error:
        raise PackError(f"{path}: not valid JSON ({error})") from None


def import_pack(*, pack_dir: Path = PACK_DIR) -> ImportReport:
    """Create or update the pack's game images and the published answers; safe to re-run. Every photo passes the
    image door (checked clean, not re-encoded) before it is stored under its content-hash name."""
    pack_dir = Path(pack_dir)
    manifest = read_manifest(pack_dir)
    report = ImportReport()
    existing = {image.source_id: image for image in GameImage.objects.filter(
        source_id__in=[entry["id"] for entry in manifest["photos"]])}
    with transaction.atomic():
        for entry in manifest["photos"]:
            image = existing.get(entry["id"])
            name = f"game_images/{Path(entry['file']).name}"
            if image is None or image.image.name != name or not default_storage.exists(name):
                try:
                    name = _store_entry(pack_dir, entry, report)
                except images.RejectedImage as error:
                    report.skip(entry["id"], f"{entry['file']}: {error.message}")
                    continue
            values = {"lat": entry["lat"], "lon": entry["lon"], "author": entry["owner"], "title": entry["title"],
                      "date_taken": entry["date_taken"], "licence_name": entry["licence"]["name"],
                      "licence_url": entry["licence"]["url"], "source_url": entry["photo_page"], "image": name,
                      "pack": STARTER_PACK, **licences.licence_fields(entry["licence"]["name"])}
            _save_image(entry["id"], image, values, report)
        _save_answers(manifest["photos"], report)
    return report


def _store_entry(pack_dir: Path, entry: dict, report: ImportReport) -> str:
    path = pack_dir / entry["file"]
    try:
        data = path.read_bytes()
    except OSError as error:
        raise images.RejectedImage(f"unreadable ({error.strerror})") from None
    if hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise images.RejectedImage("the file differs from the manifest (sha256)")
    clean = images.accept_clean_photo(data, max_side=MAX_SIDE)
    return store_photo(clean, report)


def _save_image(img_id: str, image: GameImage | None, values: dict, report: ImportReport) -> None:
    if image is None:
        GameImage.objects.create(source_id=img_id, **values)
        report.created += 1
        return
    changed = [key for key, value in values.items()
               if (getattr(image, key).name if key == "image" else getattr(image, key)) != value]
    if not changed:
        report.unchanged += 1
        return
    for key in changed:
        setattr(image, key, values[key])
    image.save(update_fields=changed + ["updated_at"])
    report.updated += 1


def _save_answers(entries: list[dict], report: ImportReport) -> None:
    by_id = {image.source_id: image for image in GameImage.objects.filter(
        source_id__in=[entry["id"] for entry in entries])}
    stored = {(guess.image_id, guess.model_name): guess
              for guess in ModelGuess.objects.filter(image__in=by_id.values())}
    for entry in entries:
        image = by_id.get(entry["id"])
        if image is None:
            continue
        for model, answer in entry["answers"].items():
            distance = scoring.error_km(true_lat=image.lat, true_lon=image.lon, lat=answer["lat"], lon=answer["lon"])
            guess = stored.get((image.pk, model))
            if guess is None:
                ModelGuess.objects.create(image=image, model_name=model, lat=answer["lat"], lon=answer["lon"],
                                          distance_km=distance)
                report.guesses_created += 1
            elif (guess.lat, guess.lon) != (answer["lat"], answer["lon"]):
                guess.lat, guess.lon, guess.distance_km = answer["lat"], answer["lon"], distance
                guess.save(update_fields=["lat", "lon", "distance_km"])
                report.guesses_updated += 1


def pack_credits(pack_dir: Path = PACK_DIR) -> list[dict]:
    """The attribution of every pack photo (author, title, page, licence), for the credits page."""
    try:
        entries = read_manifest(pack_dir)["photos"]
    except PackError:
        return []
    return [{"author": e["owner"], "title": e["title"], "source_url": e["photo_page"],
             "licence_name": e["licence"]["name"], "licence_url": e["licence"]["url"]} for e in entries]

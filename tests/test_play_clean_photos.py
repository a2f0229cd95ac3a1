"""Issue 13: no game photo gives its answer away. Every real photo in ../shared/data/im2gps3k-cc/photos and
../shared/data/exif-gps-samples/images is imported, served to a player and checked byte by byte."""
from __future__ import annotations

import csv
import io
import re
import secrets
from pathlib import Path

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone
from PIL import Image

from core import im2gps
from core.photo_metadata import jpeg_comments, metadata_blocks
from games import importing
from games.models import Game, GameImage, Round

pytestmark = pytest.mark.django_db

FORBIDDEN_WORDS = (b"latitude", b"longitude", b"owner")


def serve_every_image(client) -> dict[str, bytes]:
    """A game of the client's session with one shown round per game image; the bytes /play/photo/ serves for each."""
    session = client.session
    session.save()
    game = Game.objects.create(session_key=session.session_key, seed=1, challenge_token=secrets.token_urlsafe(16))
    served = {}
    for index, image in enumerate(GameImage.objects.order_by("source_id")):
        round_ = Round.objects.create(game=game, index=index, image=image, photo_token=secrets.token_urlsafe(16),
                                      started_at=timezone.now())
        response = client.get(reverse("game-photo", args=[round_.photo_token]))
        assert response.status_code == 200, image.source_id
        assert response["Content-Type"] in ("image/jpeg", "image/webp")
        served[image.source_id] = b"".join(response.streaming_content)
    return served


def coordinate_strings(lat: float, lon: float) -> list[bytes]:
    """The true position as text the way files write it (the comment's digits, and 4 to 6 decimals)."""
    out = set()
    for value in (lat, lon):
        out.add(repr(value).encode())
        for digits in (4, 5, 6):
            out.add(f"{value:.{digits}f}".encode())
    return sorted(out)


def assert_clean(data: bytes, *, what: str, secrets_: list[bytes]) -> None:
    assert metadata_blocks(data) == [], what
    lowered = data.lower()
    for word in FORBIDDEN_WORDS:
        assert word not in lowered, (what, word)
    for secret in secrets_:
        assert secret not in data, (what, secret)
    with Image.open(io.BytesIO(data)) as image:
        assert max(image.size) <= 1600 and image.format in ("JPEG", "WEBP")
        assert not image.info.get("exif") and not image.info.get("icc_profile") and "comment" not in image.info


def test_every_im2gps3k_cc_photo_imported_without_a_csv_is_served_clean(client, shared_data):
    photos = shared_data / "im2gps3k-cc" / "photos"
    originals = {path.name: path.read_bytes() for path in sorted(photos.glob("*.jpg"))}
    assert len(originals) == 188 and all(jpeg_comments(data) for data in originals.values())
    report = importing.import_im2gps(images=photos)
    assert (report.created, report.skipped) == (188, [])
    served = serve_every_image(client)
    assert set(served) == set(originals)
    for img_id, data in served.items():
        comments = im2gps.read_photo_comments(originals[img_id])
        lat, lon = comments.position
        flickr_id = img_id.split("_")[0]
        assert comments.flickr_id == flickr_id
        assert_clean(data, what=img_id, secrets_=[flickr_id.encode(), comments.owner.encode(),
                                                   *coordinate_strings(lat, lon)])
        image = GameImage.objects.get(source_id=img_id)
        assert (image.lat, image.lon) == (lat, lon)  # the comments gave the truth
    # The originals are nowhere under MEDIA_ROOT: only the door's copies, named by their hash.
    stored = [path for path in Path(default_storage.location).rglob("*") if path.is_file()]
    assert len(stored) == 188
    assert not {path.read_bytes() for path in stored} & set(originals.values())
    assert all(re.fullmatch(r"[0-9a-f]{32}\.jpg", path.name) for path in stored)


def test_every_exif_gps_sample_is_served_without_its_gps(client, shared_data, tmp_path):
    folder = shared_data / "exif-gps-samples"
    rows = list(csv.DictReader((folder / "coords.csv").open()))
    assert len(rows) == 21
    meta = tmp_path / "meta.csv"
    meta.write_text("IMG_ID,AUTHOR,LAT,LON\n" + "".join(f"{r['file_name']},unknown,{r['lat']},{r['lon']}\n"
                                                         for r in rows))
    report = importing.import_im2gps(meta_path=meta, images=folder / "images")
    assert (report.created, report.skipped) == (21, [])
    served = serve_every_image(client)
    assert len(served) == 21
    for row in rows:
        original = (folder / "images" / row["file_name"]).read_bytes()
        assert any("APP1" in block for block in metadata_blocks(original))  # EXIF (GPS) in the original
        lat, lon = float(row["lat"]), float(row["lon"])
        assert_clean(served[row["file_name"]], what=row["file_name"],
                     secrets_=[row["camera"].encode(), *coordinate_strings(lat, lon)])
    # The orientation was applied before the tags were dropped: portrait photos stay portrait.
    upright = {r["file_name"]: Image.open(io.BytesIO(served[r["file_name"]])).size for r in rows}
    assert upright["apple-iphone-6-plus.jpg"][0] < upright["apple-iphone-6-plus.jpg"][1]


def test_without_a_csv_the_exif_samples_are_refused_for_want_of_a_truth(shared_data):
    report = importing.import_im2gps(images=shared_data / "exif-gps-samples" / "images")
    assert report.created == 0 and len(report.skipped) == 21
    assert all("no true position" in reason and "latitude, longitude" in reason for _, reason in report.skipped)


def test_photos_stored_by_earlier_imports_are_cleaned_by_the_upgrade_command(client, shared_data):
    path = next(iter(sorted((shared_data / "im2gps3k-cc" / "photos").glob("*.jpg"))))
    original = path.read_bytes()
    # What imports before issue 13 did: the original bytes under a hash of the original.
    old_name = default_storage.save("game_images/0123456789abcdef0123456789abcdef.jpg", ContentFile(original))
    image = GameImage.objects.create(image=old_name, lat=1, lon=2, source_id=path.name, licence_name="CC BY 2.0",
                                     licence_kind="open", is_open_licence=True)
    out = io.StringIO()
    call_command("clean_game_photos", "--dry-run", stdout=out)
    assert "would clean 1" in out.getvalue() and default_storage.exists(old_name)
    call_command("clean_game_photos", stdout=out)
    image.refresh_from_db()
    assert image.image.name != old_name and not default_storage.exists(old_name)
    served = serve_every_image(client)[path.name]
    assert_clean(served, what=path.name, secrets_=[path.name.split("_")[0].encode()])
    out = io.StringIO()
    call_command("clean_game_photos", stdout=out)  # a second run finds nothing to do
    assert "1 checked, cleaned 0" in out.getvalue()

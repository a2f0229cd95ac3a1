"""The image door: bad uploads get a clear message and the right status through the real upload view, nothing is
left behind, and what is stored carries no metadata (GPS above all) and stands upright."""
from __future__ import annotations

import csv
import io
import zlib
import struct

import pillow_heif
import pytest
from django.urls import reverse
from PIL import Image, ImageOps

from core import images
from predictor.models import Analysis
from tests.conftest import make_jpeg

pillow_heif.register_heif_opener()

GPS = {1: "N", 2: (48.0, 51.0, 29.0), 3: "E", 4: (2.0, 17.0, 40.0)}


def exif_with_gps(orientation: int = 1) -> bytes:
    exif = Image.Exif()
    exif[0x8825] = GPS
    exif[0x0112] = orientation
    exif[0x010F] = "TestCam"
    return exif.tobytes()


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def asymmetric_photo(width=120, height=80) -> Image.Image:
    """Red top-left corner on blue, so rotations are visible in the stored pixels."""
    image = Image.new("RGB", (width, height), (20, 40, 200))
    image.paste((230, 20, 20), (0, 0, width // 3, height // 3))
    return image


def assert_clean(data: bytes):
    stored = Image.open(io.BytesIO(data))
    assert stored.format == "JPEG" and stored.mode == "RGB"
    assert len(stored.getexif()) == 0
    assert "exif" not in stored.info and "icc_profile" not in stored.info and "xmp" not in stored.info
    assert b"Exif\x00\x00" not in data and b"http://ns.adobe.com/xap" not in data and b"ICC_PROFILE" not in data
    return stored


@pytest.fixture
def logged_in(client, user):
    client.force_login(user)
    return client


def upload(client, data: bytes, name: str = "photo.jpg"):
    from django.core.files.uploadedfile import SimpleUploadedFile

    return client.post(reverse("analyze"), {"photo": SimpleUploadedFile(name, data, content_type="image/jpeg")})


def stored_files(settings) -> list:
    root = settings.MEDIA_ROOT
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


# --- refusals through the real view ---------------------------------------------------------------------------

def png_bomb(side: int) -> bytes:
    """A valid greyscale PNG of side x side zero pixels, compressed to a few hundred KB, written by hand so that
    the test never holds the decoded image in memory."""
    raw = zlib.compress(b"".join(b"\x00" + bytes(side) for _ in range(side)), 9)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


REFUSALS = {
    "text renamed to .jpg": (b"GIF89a? no, this is a shopping list\n" * 20, 415, "not a photo the app accepts"),
    "PDF renamed to .jpg": (b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj<<>>endobj\n", 415, "not a photo the app accepts"),
    "GIF renamed to .jpg": (encode(Image.new("P", (8, 8)), "GIF"), 415, "not a photo the app accepts"),
    "zero bytes": (b"", 400, "empty"),
    "truncated JPEG": (make_jpeg(400, 300)[:-1500], 400, "damaged or incomplete"),
}


@pytest.mark.django_db
@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_bad_upload_gets_a_clear_message_and_leaves_nothing(case, logged_in, settings):
    data, status, phrase = REFUSALS[case]
    response = upload(logged_in, data)
    assert response.status_code == status
    assert phrase in response.content.decode()
    assert Analysis.objects.count() == 0
    assert stored_files(settings) == []


@pytest.mark.django_db
def test_decompression_bomb_png_is_refused_before_decoding(logged_in, settings):
    bomb = png_bomb(12000)
    assert len(bomb) < 1_000_000  # small on disk, 144 MP once decoded
    response = upload(logged_in, bomb, "bomb.png")
    assert response.status_code == 413
    assert "pixels" in response.content.decode()
    assert Analysis.objects.count() == 0 and stored_files(settings) == []


@pytest.mark.django_db
def test_image_over_the_pixel_limit_is_refused_with_the_limit(logged_in, settings):
    settings.UPLOAD_MAX_PIXELS = 10_000
    response = upload(logged_in, make_jpeg(200, 100))
    assert response.status_code == 413
    assert "200×100 pixels" in response.content.decode() and "the limit is 0.01 MP" in response.content.decode()
    assert Analysis.objects.count() == 0


@pytest.mark.django_db
def test_file_over_the_byte_limit_is_refused_with_413(logged_in, settings):
    settings.UPLOAD_MAX_BYTES = 2000
    response = upload(logged_in, make_jpeg(400, 300))
    assert response.status_code == 413
    assert "MB" in response.content.decode()
    assert Analysis.objects.count() == 0 and stored_files(settings) == []


@pytest.mark.django_db
def test_fetch_upload_gets_json_errors(logged_in):
    from django.core.files.uploadedfile import SimpleUploadedFile

    response = logged_in.post(reverse("analyze"), {"photo": SimpleUploadedFile("x.jpg", b"nope")},
                              HTTP_ACCEPT="application/json")
    assert response.status_code == 415
    assert "not a photo" in response.json()["error"]


@pytest.mark.django_db
def test_missing_file_field_is_a_400(logged_in):
    response = logged_in.post(reverse("analyze"), {})
    assert response.status_code == 400
    assert "choose a photo" in response.content.decode()


@pytest.mark.django_db
def test_upload_page_tells_that_gps_tags_are_removed(logged_in):
    page = logged_in.get(reverse("analyze")).content.decode()
    assert "GPS" in page and "stripped" in page and "never used" in page


@pytest.mark.django_db
def test_anonymous_upload_is_sent_to_login(client, jpeg_bytes):
    response = upload(client, jpeg_bytes)
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]
    assert Analysis.objects.count() == 0


# --- accepted photos: clean copies ----------------------------------------------------------------------------

@pytest.mark.django_db
def test_huge_exif_block_is_accepted_and_dropped(logged_in, settings):
    exif = Image.Exif()
    exif[0x010E] = "x" * 60_000  # ImageDescription filling nearly the whole 64 KB APP1 segment
    exif[0x8825] = GPS
    data = encode(asymmetric_photo(), "JPEG", exif=exif.tobytes())
    assert len(data) > 60_000
    response = upload(logged_in, data)
    assert response.status_code == 302
    analysis = Analysis.objects.get()
    assert_clean(analysis.image.read())


@pytest.mark.django_db
def test_heic_with_gps_is_stored_without_gps_and_upright(logged_in):
    data = encode(asymmetric_photo(120, 80), "HEIF", exif=exif_with_gps(orientation=6), quality=90)
    assert Image.open(io.BytesIO(data)).getexif().get_ifd(0x8825)  # the fixture really carries GPS
    response = upload(logged_in, data, "IMG_0001.HEIC")
    assert response.status_code == 302
    analysis = Analysis.objects.get()
    assert analysis.original_format == "HEIF"
    stored = assert_clean(analysis.image.read())
    assert stored.size == (80, 120)  # orientation 6: rotated to portrait


@pytest.mark.django_db
def test_jpeg_orientation_is_applied_and_metadata_removed(logged_in):
    data = encode(asymmetric_photo(120, 80), "JPEG", exif=exif_with_gps(orientation=6), quality=95)
    upload(logged_in, data)
    stored = assert_clean(Analysis.objects.get().image.read())
    assert stored.size == (80, 120)
    # Orientation 6 means "rotate 90° clockwise to view": the red top-left corner ends up top-right.
    r, g, b = stored.convert("RGB").getpixel((stored.width - 5, 5))
    assert r > 150 and b < 100


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "AVIF"])
def test_other_allowed_formats_with_gps_come_out_clean(fmt):
    photo = asymmetric_photo()
    data = encode(photo, fmt, exif=exif_with_gps())
    clean = images.clean_upload(data)
    assert clean.source_format == fmt
    assert_clean(clean.jpeg)
    assert_clean(clean.thumbnail)


def test_icc_profile_is_not_kept():
    from PIL import ImageCms

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    clean = images.clean_upload(encode(asymmetric_photo(), "JPEG", icc_profile=icc))
    assert_clean(clean.jpeg)


def test_transparent_png_is_flattened_on_white():
    image = Image.new("RGBA", (40, 40), (0, 0, 0, 0))
    clean = images.clean_upload(encode(image, "PNG"))
    assert Image.open(io.BytesIO(clean.jpeg)).getpixel((20, 20))[0] > 240


def test_large_photo_is_stored_at_most_2048_pixels_wide():
    clean = images.clean_upload(encode(asymmetric_photo(3000, 1500), "JPEG"))
    assert (clean.width, clean.height) == (2048, 1024)
    assert (clean.source_width, clean.source_height) == (3000, 1500)


def test_sha256_is_of_the_original_bytes(jpeg_bytes):
    import hashlib

    assert images.clean_upload(jpeg_bytes).sha256 == hashlib.sha256(jpeg_bytes).hexdigest()


def _gps_samples(shared_data):
    folder = shared_data / "exif-gps-samples"
    with open(folder / "coords.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return folder / "images", rows


@pytest.mark.django_db
def test_real_camera_jpegs_lose_gps_and_keep_orientation(shared_data, logged_in):
    folder, rows = _gps_samples(shared_data)
    # The iPhone 5 sample is stored upside down (orientation 3); the Galaxy S7 is a 12 MP phone photo.
    for name in ["apple-iphone-5.jpg", "samsung-sm-g935l-galaxy-s7-edge.jpg", "issue-508.jpg"]:
        original_bytes = (folder / name).read_bytes()
        original = Image.open(io.BytesIO(original_bytes))
        assert original.getexif().get_ifd(0x8825), name
        response = upload(logged_in, original_bytes, name)
        assert response.status_code == 302, name
        analysis = Analysis.objects.order_by("-id").first()
        stored = assert_clean(analysis.image.read())
        upright = ImageOps.exif_transpose(original).convert("RGB")
        upright.thumbnail((images.STORED_MAX_SIDE, images.STORED_MAX_SIDE))
        assert abs(stored.width - upright.width) <= 2 and abs(stored.height - upright.height) <= 2, name
        if min(upright.size) >= 64:
            # The same picture the right way up: compare tiny versions of both.
            a = stored.resize((16, 16)).convert("L")
            b = upright.resize((16, 16)).convert("L")
            diff = sum(abs(x - y) for x, y in zip(a.getdata(), b.getdata())) / 256
            flipped = b.rotate(180)
            diff_flipped = sum(abs(x - y) for x, y in zip(a.getdata(), flipped.getdata())) / 256
            assert diff < 12 and diff < diff_flipped, name

"""Fuzzing the image door and the upload endpoint (hypothesis): random and mutated JPEG/PNG/WebP/GIF/BMP bytes,
headers that claim huge sizes, and photos of any shape from 1 x N to N x 1 with any EXIF orientation. Whatever arrives: a clear refusal or an accepted photo, never a server error, never
a hang, never a file left behind by a refusal. benchmarks/fuzz_upload.py runs the same idea over 10,000 inputs."""
from __future__ import annotations

import io
import os
import struct
import zlib

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st
from PIL import Image

from core import images
from predictor import services
from predictor.models import Analysis, UploadAudit


def _encode(fmt: str, size=(40, 30), mode="RGB", **kwargs) -> bytes:
    image = Image.new(mode, size, (30, 140, 200) if mode == "RGB" else 128)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def _png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height pixels, with one tiny (wrong) data chunk."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + \
        chunk(b"IEND", b"")


SEEDS = [_encode("JPEG"), _encode("JPEG", progressive=True), _encode("PNG"), _encode("PNG", mode="L"),
         _encode("WEBP"), _encode("GIF", mode="L"), _encode("BMP"), _png_claiming(100_000, 100_000),
         _png_claiming(1, 1), _png_claiming(0, 5)]

mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10_000), st.integers(1, 255)),
    st.tuples(st.just("cut"), st.integers(0, 10_000), st.just(0)),
    st.tuples(st.just("insert"), st.integers(0, 10_000), st.binary(min_size=1, max_size=64)),
)


def mutate(data: bytes, ops) -> bytes:
    buffer = bytearray(data)
    for kind, position, value in ops:
        if not buffer:
            break
        at = position % len(buffer)
        if kind == "flip":
            buffer[at] ^= value
        elif kind == "cut":
            del buffer[at:]
        else:
            buffer[at:at] = value
    return bytes(buffer)


inputs = st.one_of(
    st.binary(max_size=2048),
    st.builds(mutate, st.sampled_from(SEEDS), st.lists(mutation, min_size=1, max_size=4)),
    st.sampled_from(SEEDS),
)


@hsettings(max_examples=200, deadline=5000, suppress_health_check=[HealthCheck.too_slow])
@given(inputs)
def test_the_image_door_only_accepts_or_refuses_clearly(data):
    try:
        clean = images.clean_upload(data, max_bytes=1_000_000, max_pixels=4_000_000)
    except images.RejectedImage as refusal:
        assert refusal.status in (400, 413, 415) and refusal.message
        return
    assert Image.open(io.BytesIO(clean.jpeg)).format == "JPEG" and clean.width >= 1 and clean.height >= 1


def _files(root) -> list[str]:
    return [f for _, _, files in os.walk(root) for f in files] if os.path.isdir(root) else []


@pytest.mark.django_db
@hsettings(max_examples=200, deadline=5000,
           suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=inputs)
def test_the_upload_endpoint_never_errors_and_leaves_nothing_on_refusal(client, user, settings, data):
    settings.UPLOAD_DAILY_QUOTA = 0
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "upload": (0, 3600)}
    settings.EMBEDDED_WORKER = False
    client.force_login(user)
    response = client.post(reverse("analyze"), {"photo": SimpleUploadedFile("x.bin", data)},
                           HTTP_ACCEPT="application/json")
    media = settings.MEDIA_ROOT
    try:
        if response.status_code == 201:
            analysis = Analysis.objects.get(pk=response.json()["id"])
            assert sorted(_files(media)) == sorted(os.path.basename(n) for n in (analysis.image.name,
                                                                                analysis.thumbnail.name))
        else:
            assert response.status_code in (400, 413, 415), response.content
            assert response.json()["error"]
            assert not Analysis.objects.exists() and not UploadAudit.objects.exists() and _files(media) == []
    finally:
        for analysis in Analysis.objects.all():  # each example starts clean, deleted as the app deletes
            services.delete_analysis(analysis=analysis)
        UploadAudit.objects.all().delete()
    assert _files(media) == []


def _shaped(width: int, height: int, fmt: str, mode: str, orientation: int) -> bytes:
    image = Image.new(mode, (width, height), 120 if mode in ("L", "P") else (90, 140, 200, 255)[:len(mode)])
    kwargs = {}
    if fmt in ("JPEG", "WEBP"):
        exif = Image.Exif()
        exif[0x0112] = orientation
        kwargs["exif"] = exif.tobytes()
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


side = st.one_of(st.integers(1, 16), st.integers(1, 3000), st.sampled_from([1, 2, 205, 2048, 4096, 16383]))
# At most 4 MP, so that drawing the example costs little; the door's pixel limit is tested on its own.
sizes = st.tuples(side, side).filter(lambda size: size[0] * size[1] <= 4_000_000)
shaped = st.builds(lambda size, fmt, mode, orientation: _shaped(*size, fmt, mode, orientation), sizes,
                   st.sampled_from(["JPEG", "PNG", "WEBP"]), st.sampled_from(["RGB", "L"]), st.integers(1, 8))


@hsettings(max_examples=100, deadline=10_000, suppress_health_check=[HealthCheck.too_slow])
@given(shaped)
def test_any_shape_is_refused_for_its_ratio_or_stored_within_bounds(data):
    width, height = Image.open(io.BytesIO(data)).size
    try:
        clean = images.clean_upload(data, max_bytes=5_000_000, max_pixels=40_000_000, max_aspect=10)
    except images.RejectedImage as refusal:
        assert refusal.status == 400 and "times longer than it is wide" in refusal.message, refusal.message
        assert max(width, height) > 10 * min(width, height)
        return
    assert max(width, height) <= 10 * min(width, height)
    assert max(clean.width, clean.height) <= 2048
    assert max(clean.width, clean.height) <= 10 * min(clean.width, clean.height) + 10  # rounding of a shrunk side

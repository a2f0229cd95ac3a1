"""Hostile and odd uploads, built in memory: the shapes of issue 14 (1 x N and N x 1 up to the pixel limit, huge
declared sizes with tiny payloads, EXIF orientations 5-8 on extreme shapes, CMYK, 16-bit, palettes with
transparency, first frames of animations) and the earlier corpus (wrong types, bombs, truncations, polyglots,
metadata stuffing), plus real camera photos from ../shared/data as the ordinary neighbours.

Each case says what the image door must do with it: refuse it with a status and a phrase of the message, or accept
it (and then the worker must finish it). Used by tests/test_upload_shapes.py, tests/test_worker_hostile.py and
benchmarks/fuzz_upload.py. Large inputs are written by hand (PNG rows streamed through zlib), never decoded here.
"""
from __future__ import annotations

import base64
import io
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

PIXEL_LIMIT = 40_000_000  # settings.UPLOAD_MAX_PIXELS by default
ASPECT_PHRASE = "times longer than it is wide"


@dataclass(frozen=True)
class Case:
    name: str
    data: bytes
    expect: str  # "accepted" or "refused"
    status: int | None = None  # for refusals
    phrase: str = ""  # part of the refusal message
    shape: str = ""  # declared width x height, for the report


def refused(name, data, status, phrase, shape=""):
    return Case(name, data, "refused", status, phrase, shape)


def accepted(name, data, shape=""):
    return Case(name, data, "accepted", shape=shape)


# --- writers ---------------------------------------------------------------------------------------------------

def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def png_rows(width: int, height: int, *, bit_depth: int = 8, colour_type: int = 0, row: bytes | None = None) -> bytes:
    """A valid PNG of `height` identical rows, compressed as it is written (a 1 x 40,000,000 strip stays small)."""
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[colour_type]
    row_bytes = width * channels * bit_depth // 8
    row = row if row is not None else bytes(row_bytes)
    compressor = zlib.compressobj(9)
    line = b"\x00" + row
    per_chunk = max(1, (1 << 20) // len(line))
    parts, left = [], height
    while left:
        n = min(left, per_chunk)
        parts.append(compressor.compress(line * n))
        left -= n
    parts.append(compressor.flush())
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", b"".join(parts)) + _chunk(b"IEND", b"")


def png_claiming(width: int, height: int) -> bytes:
    """A PNG header claiming width x height RGB pixels with one tiny (far too short) data chunk."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(b"\0" * 64)) + \
        _chunk(b"IEND", b"")


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def scene(width: int, height: int, mode: str = "RGB") -> Image.Image:
    """A photo-like picture: a sky over a darker ground, with a bright block in the top-left corner."""
    image = Image.new("RGB", (width, height), (110, 160, 220))
    image.paste((60, 110, 50), (0, height // 2, width, height))
    image.paste((240, 60, 30), (0, 0, max(1, width // 4), max(1, height // 4)))
    return image.convert(mode) if mode != "RGB" else image


def jpeg_claiming(width: int, height: int) -> bytes:
    """A small real JPEG whose frame header is rewritten to claim width x height: the scan is far too short."""
    data = bytearray(encode(scene(64, 48), "JPEG"))
    at = data.index(b"\xff\xc0")
    data[at + 5:at + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def webp_claiming(width: int, height: int) -> bytes:
    """A small lossless WebP whose VP8L header claims width x height (at most 16384 each)."""
    data = bytearray(encode(scene(16, 16), "WEBP", lossless=True))
    at = data.index(b"VP8L") + 8  # chunk tag, chunk size, then the signature byte 0x2f
    bits = struct.unpack("<I", bytes(data[at + 1:at + 5]))[0]
    bits = (bits & ~0x0FFFFFFF) | ((width - 1) & 0x3FFF) | (((height - 1) & 0x3FFF) << 14)
    data[at + 1:at + 5] = struct.pack("<I", bits)
    return bytes(data)


def with_orientation(image: Image.Image, orientation: int, fmt: str = "JPEG") -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x8825] = {1: "N", 2: (48.0, 51.0, 29.0), 3: "E", 4: (2.0, 17.0, 40.0)}  # GPS the door must drop
    return encode(image, fmt, exif=exif.tobytes())


def palette_with_transparency(width: int, height: int) -> bytes:
    image = Image.new("P", (width, height), 1)
    image.putpalette([0, 0, 0, 200, 40, 40, 40, 90, 200] + [0] * (256 * 3 - 9))
    image.paste(2, (0, 0, width // 2, height))
    image.paste(0, (0, 0, max(1, width // 8), max(1, height // 8)))  # index 0 is transparent
    return encode(image, "PNG", transparency=0)


def sixteen_bit_rgb(width: int, height: int) -> bytes:
    row = b"".join(struct.pack(">HHH", (x * 997) % 65536, 40000, 1000) for x in range(width))
    return png_rows(width, height, bit_depth=16, colour_type=2, row=row)


def animation(fmt: str, size=(96, 64)) -> bytes:
    frames = [scene(*size).rotate(i * 90) for i in range(3)]
    if fmt == "PNG":
        return encode(frames[0], "PNG", save_all=True, append_images=frames[1:], duration=100)
    if fmt == "GIF":
        return encode(frames[0].convert("P"), "GIF", save_all=True,
                      append_images=[f.convert("P") for f in frames[1:]], duration=100, loop=0)
    return encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100)


# --- the corpus ------------------------------------------------------------------------------------------------

def shape_cases(pixel_limit: int = PIXEL_LIMIT) -> list[Case]:
    """The shapes of issue 14."""
    cases = [
        # The file that took the server down: 5.6 KB, 20,000 x 10.
        refused("JPEG 20000x10 strip", encode(scene(20000, 10), "JPEG"), 400, ASPECT_PHRASE, "20000x10"),
        refused("PNG 1xN at the pixel limit", png_rows(1, pixel_limit), 400, ASPECT_PHRASE, f"1x{pixel_limit}"),
        refused("PNG Nx1 at the pixel limit", png_rows(pixel_limit, 1), 400, ASPECT_PHRASE, f"{pixel_limit}x1"),
        refused("PNG Nx1 over the pixel limit", png_rows(pixel_limit + 1, 1), 413, "pixels",
                f"{pixel_limit + 1}x1"),
        refused("JPEG 65500x1", encode(scene(65500, 1, "L"), "JPEG"), 400, ASPECT_PHRASE, "65500x1"),
        refused("JPEG 1x65500", encode(scene(1, 65500, "L"), "JPEG"), 400, ASPECT_PHRASE, "1x65500"),
        refused("WebP 16383x1", encode(scene(16383, 1), "WEBP"), 400, ASPECT_PHRASE, "16383x1"),
        refused("WebP 1x16383", encode(scene(1, 16383), "WEBP"), 400, ASPECT_PHRASE, "1x16383"),
        accepted("PNG 1x1", png_rows(1, 1), "1x1"),
        accepted("JPEG 10:1 panorama 4000x400", encode(scene(4000, 400), "JPEG"), "4000x400"),
        accepted("PNG 1:10 tower 300x3000", encode(scene(300, 3000), "PNG"), "300x3000"),
        refused("JPEG 10.5:1 4200x400", encode(scene(4200, 400), "JPEG"), 400, ASPECT_PHRASE, "4200x400"),
        # Huge declared sizes, tiny payloads.
        refused("PNG claiming 6000x6000, 100 bytes of data", png_claiming(6000, 6000), 400, "damaged",
                "6000x6000"),
        refused("PNG claiming 2^31-1 x 1", png_claiming(2**31 - 1, 1), 413, "pixels", f"{2**31 - 1}x1"),
        refused("PNG claiming 100000x100000", png_claiming(100_000, 100_000), 413, "pixels", "100000x100000"),
        # libjpeg fills a scan that ends early with grey and reports no error, so this one is decoded (at most
        # the pixel limit, DCT-scaled) and analysed as a mostly grey photo.
        accepted("JPEG claiming 6000x6000", jpeg_claiming(6000, 6000), "6000x6000"),
        refused("JPEG claiming 65000x600", jpeg_claiming(65000, 600), 400, ASPECT_PHRASE, "65000x600"),
        refused("WebP claiming 16384x2400", webp_claiming(16384, 2400), 400, "damaged", "16384x2400"),
        refused("WebP claiming 16384x16384", webp_claiming(16384, 16384), 413, "pixels", "16384x16384"),
        # Colour models and depths.
        accepted("CMYK JPEG", encode(scene(640, 480, "CMYK"), "JPEG"), "640x480"),
        accepted("CMYK JPEG 10:1", encode(scene(3000, 300, "CMYK"), "JPEG"), "3000x300"),
        accepted("16-bit grey PNG", encode(Image.frombytes("I;16", (320, 240), bytes(range(256)) * 600), "PNG"),
                 "320x240"),
        accepted("16-bit RGB PNG", sixteen_bit_rgb(400, 300), "400x300"),
        accepted("16-bit RGB PNG 1:10", sixteen_bit_rgb(120, 1200), "120x1200"),
        accepted("palette PNG with transparency", palette_with_transparency(480, 320), "480x320"),
        accepted("palette PNG with transparency 10:1", palette_with_transparency(2000, 200), "2000x200"),
        accepted("grey + alpha PNG", encode(scene(300, 200, "LA"), "PNG"), "300x200"),
        accepted("1-bit PNG", encode(scene(300, 200, "1"), "PNG"), "300x200"),
        # First frames of animations (GIF is not an accepted format at all).
        refused("animated GIF", animation("GIF"), 415, "not a photo the app accepts", "96x64"),
        accepted("animated WebP", animation("WEBP"), "96x64"),
        accepted("APNG", animation("PNG"), "96x64"),
    ]
    # EXIF orientations 5-8 (the transposing ones) on extreme shapes: the long side turns.
    for orientation in (5, 6, 7, 8):
        cases.append(accepted(f"JPEG 3000x300, EXIF orientation {orientation}",
                              with_orientation(scene(3000, 300), orientation), "3000x300"))
        cases.append(refused(f"JPEG 4400x400, EXIF orientation {orientation}",
                             with_orientation(scene(4400, 400), orientation), 400, ASPECT_PHRASE, "4400x400"))
    cases.append(accepted("WebP 300x3000, EXIF orientation 6", with_orientation(scene(300, 3000), 6, "WEBP"),
                          "300x3000"))
    return cases


def earlier_cases() -> list[Case]:
    """The earlier hostile corpus: types, bombs, truncations, polyglots, metadata stuffing."""
    photo = encode(scene(640, 480), "JPEG", quality=90)
    bomb_side = 12000
    stuffing = Image.Exif()
    stuffing[0x010E] = "A" * 60_000  # ImageDescription
    stuffing[0x8825] = {1: "S", 2: (33.0, 51.0, 0.0), 3: "E", 4: (151.0, 12.0, 0.0)}
    big_text = Image.new("RGB", (320, 240), (20, 90, 160))
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "x" * 500_000, zip=True)
    return [
        refused("zero bytes", b"", 400, "empty"),
        refused("text renamed .jpg", b"GIF89a? no, a shopping list\n" * 20, 415, "not a photo the app accepts"),
        refused("PDF renamed .jpg", b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj<<>>endobj\n", 415,
                "not a photo the app accepts"),
        refused("SVG with a script", b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>', 415,
                "not a photo the app accepts"),
        refused("HTML page", b"<!doctype html><html><body><img src=x onerror=alert(1)></body></html>", 415,
                "not a photo the app accepts"),
        refused("GIF", encode(scene(64, 48).convert("P"), "GIF"), 415, "not a photo the app accepts", "64x48"),
        refused("BMP", encode(scene(64, 48), "BMP"), 415, "not a photo the app accepts", "64x48"),
        refused("TIFF", encode(scene(64, 48), "TIFF"), 415, "not a photo the app accepts", "64x48"),
        refused("truncated JPEG", photo[:-1500], 400, "damaged", "640x480"),
        refused("JPEG header only", photo[:200], 415, "could not be read as an image", "640x480"),
        refused("PNG bomb 12000x12000 of zeros", png_rows(bomb_side, bomb_side), 413, "pixels",
                f"{bomb_side}x{bomb_side}"),
        accepted("progressive JPEG", encode(scene(640, 480), "JPEG", progressive=True), "640x480"),
        accepted("JPEG with a ZIP appended (polyglot)", photo + b"PK\x03\x04" + b"\0" * 200, "640x480"),
        accepted("JPEG with 60 KB of EXIF and GPS", encode(scene(640, 480), "JPEG", exif=stuffing.tobytes()),
                 "640x480"),
        accepted("PNG with a 500 KB text chunk", encode(big_text, "PNG", pnginfo=info), "320x240"),
        accepted("JPEG with a broken EXIF orientation", with_orientation(scene(400, 300), 99), "400x300"),
        accepted("WebP", encode(scene(640, 480), "WEBP"), "640x480"),
        accepted("HEIC with GPS", _heic(), "640x480"),
        refused("HEIF whose coded size disagrees with its header", HEIF_CODED_SIZE_MISMATCH, 400, "damaged",
                "48x36"),
        accepted("AVIF", encode(scene(640, 480), "AVIF"), "640x480"),
    ]


# Found by benchmarks/fuzz_upload.py (seed 1, input 5,793): a mutated 48 x 36 HEIF whose coded stream claims
# 1,895,825,472 x 64 pixels. pillow-heif refused it with a RuntimeError the door did not expect: HTTP 500.
HEIF_CODED_SIZE_MISMATCH = base64.b64decode(
    "AAAAHGZ0eXBoZWljAAAAAG1pZjFoZWljbWlhZgAAAX1tZXRhAAAAAAAAACFoZGxyAAAAAAAAAABwaWN0AAAAAAAAAAAAAAAAAAAAACJpbG9jAAAA"
    "AERAAAEAAQAAAAABoQABAAAAAAAAAwQAAAAjaWluZgAAAAAAAQAAABVpbmZlAgAAAAABAABodmMxAAAAAA5waXRtAAAAAAABAAAA/WlwcnAAAADd"
    "aXBjbwAAAHZodmNDAQNwAAAAkAAAAAAAHvAA/P34+AAADwNgAAEAGEABDAH//wNwAAADAJAAAAMAAAMAHroCQGEAAQAqQgEBA3AAAAMAkAAAAwAA"
    "AwAeoCCBBZbq5Ka5uAhoMCAAAAMDIAAAAwAhYgABAAZEAcFzwIkAAAATY29scm5jbHgAAQANAAaAAAAAFGlzcGUAAAAAcQAAQAAAAEAAAAAoY2xh"
    "cAAAADAAAAABAAAAJAAAAAH////wAAAAAv///+QAAAACAAAAEHBpeGkAAAAAAwgICAAAABhpcG1hAAAAAAAAAAEAAQWBAgMFhAAAAwxtZGF0AAAD"
    "ACgBrxOAl+CGs9W5oO832DdcxHc7LKe/zduhmNq4lu4RviC6Mmcftto/r3nsn5YTXCnJ/fS4AhuPyZDXTZ2ZV25sKyX+9PZ0mocOid4PervPAqR8"
    "iDbxnAocmXkzUyXlJ4qjQ4RP1LTQja1hFrjZA0qS3MLSAWa7Fb7sK57ecnT617k6VexZmgM4wLAYgQCMAGzgT8AnLGhwjtYO2ORETfUIaHk/YD3J"
    "pEx2yHgp1P1azCWYeScnKiMG1epFTpWVYLrgRDI+wWxinOHB3GcVJ7BZ04DiLMy+qv4L6pgbkWElGczYYXzOk5QvgupkOM5VpZbsLl8HsLMM4y3S"
    "g2Yic1HL3I2kYL0RuHJ3aiEWq4OD8nauU9ThSPtAGpCrWdhXstVHwQkQwa4L7GjZF822EeuRqWtTO8TatBh3AylFngzKt1ITIhffaUu15Lsz2a3H"
    "46FpjSC030B6hPqnEds9830z1rf4NfiJisk7XUF0B6QtJvHSSeABW5NKVsj9yreRNsyfIuRR56IGl8cf1MAXmiIwF8JA36ZQjBu1dvo469sZROq5"
    "Woio9eXmjiaXXk/phnSJBzrUaCsmd2wG5fzSOHOpGwsjvHbATyW5S3Fs/zLD/9YEmXh+A+L7lJShRzZ5CpG9g59Dg/2IE/c2yX+GOcZxyRc7tzx+"
    "AqUPq030m4u3O0cxwlwrAqeZ2XSLcTgIzOBYuyrMAi9V86kA3o9FoaC8QMIUL2FY80fcbsMOnqjk6+Wkcv+N5RFFIBtm26fg0uUqxGCIheNFNndS"
    "oVs/5He5FzozYMYetBwio8U8AzQ64lZotb9IOqLoMT9O3WrfvHuuy8QwB1BxKKWkaQ2Rm0dyzYalh6YJD+Ngt5Iz/NwfA5xG20t8lQTFLYaSou6Z"
    "wUuEmAzGt49DiOHW1wmRIJzjr/Hr9nLGQ/Tu9uPX0f8h1zuv//dQKta0xS8h1ABLmXFgHBsnOvM81Y2GtBSjW++oxkSvJVZiq2+EQX2V6srFsnwo"
    "M7nXEUyDOaexeLN9NQ=="
)


def _heic() -> bytes:
    import pillow_heif

    pillow_heif.register_heif_opener()
    exif = Image.Exif()
    exif[0x8825] = {1: "N", 2: (48.0, 51.0, 29.0), 3: "E", 4: (2.0, 17.0, 40.0)}
    return encode(scene(640, 480), "HEIF", exif=exif.tobytes())


def ordinary_photos(shared_data: Path, count: int = 4) -> list[Case]:
    """Real camera JPEGs (with GPS tags) and street-level photos from ../shared/data."""
    folders = [shared_data / "exif-gps-samples" / "images", shared_data / "osv5m-samples" / "images"]
    files = [f for folder in folders if folder.is_dir() for f in sorted(folder.glob("*.jpg"))]
    picked = files[:count // 2] + files[-(count - count // 2):]
    return [accepted(f"camera photo {f.name}", f.read_bytes()) for f in picked]


def legacy_strips() -> dict[str, bytes]:
    """Stored copies the door made before it refused extreme shapes (2,048 px on the long side): the worker must
    still analyse them in bounded memory (analyses queued before an upgrade, or re-queued after a crash)."""
    return {"stored 2048x1": encode(scene(2048, 1), "JPEG"), "stored 1x2048": encode(scene(1, 2048), "JPEG"),
            "stored 2048x3": encode(scene(2048, 3), "JPEG")}

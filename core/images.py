"""The only door through which user photos enter: checks type, size and pixels, decodes fully, applies the EXIF
orientation and re-encodes a metadata-free JPEG. Nothing else in the app reads the bytes a user sent.
"""
from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass

import pillow_heif
from django.conf import settings
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

pillow_heif.register_heif_opener()

# Detected from the content by Pillow; the file name and the browser's Content-Type are never trusted.
ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "HEIF", "AVIF")
FORMAT_NAMES = "JPEG, PNG, WebP, HEIC/HEIF or AVIF"
STORED_QUALITY = 92
# The model looks at a few hundred pixels; keeping full 40 MP copies would only cost disk and decode time.
STORED_MAX_SIDE = 2048
THUMBNAIL_SIDE = 320
# Modes whose pixels can be averaged (Image.reduce); palette and 1-bit images cannot, and 16-bit ones are converted
# first.
_REDUCIBLE_MODES = ("L", "LA", "RGB", "RGBA", "CMYK", "YCbCr", "I", "F", "LAB")

# Pillow only warns between its own limit and twice that; an upload above it is refused, never decoded.
warnings.filterwarnings("error", category=Image.DecompressionBombWarning)


class RejectedImage(Exception):
    """A photo the app will not take, with a message meant for the person who sent it and an HTTP status."""

    def __init__(self, message: str, *, status: int = 400):
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass(frozen=True)
class CleanImage:
    """The re-encoded photo: RGB JPEG bytes without EXIF, GPS, XMP or ICC, plus what is kept about the original."""

    jpeg: bytes
    thumbnail: bytes
    width: int
    height: int
    source_format: str
    source_width: int
    source_height: int
    sha256: str  # of the bytes as uploaded, to recognise a repeated upload without keeping the original


def clean_upload(data: bytes, *, max_bytes: int | None = None, max_pixels: int | None = None,
                 max_aspect: float | None = None) -> CleanImage:
    """Validate the uploaded bytes and return the cleaned copy, or raise `RejectedImage` with a clear message."""
    max_bytes = settings.UPLOAD_MAX_BYTES if max_bytes is None else max_bytes
    max_pixels = settings.UPLOAD_MAX_PIXELS if max_pixels is None else max_pixels
    max_aspect = settings.UPLOAD_MAX_ASPECT_RATIO if max_aspect is None else max_aspect
    if not data:
        raise RejectedImage("The file is empty. Please choose a photo.")
    if len(data) > max_bytes:
        raise RejectedImage(
            f"The file is {len(data) / 2**20:.1f} MB; the limit is {max_bytes / 2**20:.3g} MB.", status=413)
    image = _open(data)
    width, height = image.size
    if width < 1 or height < 1:
        raise RejectedImage("The image has no pixels.")
    if width * height > max_pixels:
        raise RejectedImage(
            f"The image is {width}×{height} pixels ({width * height / 1e6:.3g} MP); the limit is "
            f"{max_pixels / 1e6:g} MP. Please send a smaller version.", status=413)
    # Checked on the header, before decoding: a 20000 x 10 strip is a few KB but would be stored as 2048 x 1, and
    # every size derived from it downstream (crops, maps) would follow its long side.
    if max(width, height) > max_aspect * min(width, height):
        ratio = max(width, height) / min(width, height)
        times = f"{ratio:,.0f}" if ratio >= 100 else f"{ratio:.3g}"
        raise RejectedImage(f"The image is {width}×{height} pixels, {times} times longer than it is wide; photos up "
                            f"to {max_aspect:g}:1 are accepted. Please crop it.")
    source_format = image.format
    rgb = _decode(image)
    jpeg = _encode(rgb, max_side=STORED_MAX_SIDE)
    thumbnail = _encode(rgb, max_side=THUMBNAIL_SIDE, quality=85)
    stored = Image.open(io.BytesIO(jpeg))
    return CleanImage(
        jpeg=jpeg, thumbnail=thumbnail, width=stored.width, height=stored.height, source_format=source_format,
        source_width=width, source_height=height, sha256=hashlib.sha256(data).hexdigest(),
    )


def _open(data: bytes) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        if isinstance(error, UnidentifiedImageError):
            raise RejectedImage(
                f"This file is not a photo the app accepts. Please send {FORMAT_NAMES}.", status=415) from None
        raise RejectedImage("The image has far too many pixels to be processed safely.", status=413) from None
    except (OSError, ValueError, SyntaxError, EOFError, RuntimeError):
        raise RejectedImage(f"The file could not be read as an image. Please send {FORMAT_NAMES}.",
                            status=415) from None


def _decode(image: Image.Image) -> Image.Image:
    """Decode every pixel (a truncated or corrupt file fails here), upright it, and convert it to sRGB RGB."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            if image.format == "JPEG":
                # DCT scaling decodes a large JPEG at a fraction of the cost; the whole stream is still read.
                image.draft("RGB", (STORED_MAX_SIDE, STORED_MAX_SIDE))
            image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise RejectedImage("The image has far too many pixels to be processed safely.", status=413) from None
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError, RuntimeError):
        # RuntimeError: pillow-heif's answer to a stream it refuses (e.g. coded larger than its header says).
        raise RejectedImage(
            "The image is damaged or incomplete (was the upload cut off?). Please send the file again.") from None
    factor = max(image.size) // STORED_MAX_SIDE
    if factor >= 2 and image.mode in _REDUCIBLE_MODES:
        # Only the stored size is ever used: a cheap integer reduction right after decoding keeps the copies that
        # follow (orientation, transparency, colour) small. A 40 MP RGBA PNG peaked 675 MB above the process before.
        image = image.reduce(factor)
    try:
        upright = ImageOps.exif_transpose(image)
    except Exception:  # noqa: BLE001 - a broken EXIF block only costs the orientation, never the photo
        upright = image
    icc = image.info.get("icc_profile")
    if upright.mode in ("RGBA", "LA", "PA") or (upright.mode == "P" and "transparency" in upright.info):
        rgba = upright.convert("RGBA")
        flat = Image.new("RGB", rgba.size, (255, 255, 255))
        flat.paste(rgba, mask=rgba.getchannel("A"))
        upright = flat
    elif upright.mode.startswith("I;16") or upright.mode == "I":
        upright = upright.point(lambda v: v / 256).convert("L")
    rgb = upright.convert("RGB")
    if icc:
        rgb = _to_srgb(rgb, icc)
    if max(rgb.size) > STORED_MAX_SIDE:
        # Only the stored size is ever used: shrinking before the copy below keeps a 40 MP upload from holding two
        # more full-size copies of itself.
        rgb.thumbnail((STORED_MAX_SIDE, STORED_MAX_SIDE), Image.Resampling.LANCZOS)
    # A fresh image carries no `info`: nothing of the original's metadata can reach the encoder.
    return Image.frombytes("RGB", rgb.size, rgb.tobytes())


def _to_srgb(image: Image.Image, icc: bytes) -> Image.Image:
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        return ImageCms.profileToProfile(image, source, ImageCms.createProfile("sRGB"), outputMode="RGB")
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return image  # an unreadable profile is dropped; the colours are then taken as sRGB


def _encode(image: Image.Image, *, max_side: int, quality: int = STORED_QUALITY) -> bytes:
    if max(image.size) > max_side:
        image = image.copy()
        image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality, optimize=True)
    return buffer.getvalue()


def open_stored(data: bytes) -> Image.Image:
    """Open a copy this module stored (JPEG only) for the model; raises RejectedImage if it cannot be read."""
    try:
        image = Image.open(io.BytesIO(data), formats=("JPEG",))
        image.load()
        return image.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError):
        raise RejectedImage("The stored photo could not be read. Please upload it again.") from None


def stored_size(data: bytes) -> tuple[int, int]:
    """Width and height of a stored copy, read from its header."""
    return Image.open(io.BytesIO(data), formats=("JPEG",)).size


# Colour ramp for activation maps (dark blue -> cyan -> yellow -> red), interpolated per pixel.
_RAMP = ((0.0, (20, 30, 120)), (0.35, (30, 170, 220)), (0.65, (250, 220, 40)), (1.0, (215, 30, 30)))
OVERLAY_MAX_SIDE = 512


def activation_overlay_png(photo_size: tuple[int, int], cam) -> bytes:
    """The class activation map (HxW values in 0..1) as a coloured, semi-transparent RGBA PNG with the photo's
    aspect ratio, to be laid over the photo by the page. Only the map travels: no pixels of the photo."""
    import numpy as np

    width, height = photo_size
    scale = min(1.0, OVERLAY_MAX_SIDE / max(width, height))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    heat = np.clip(np.nan_to_num(np.asarray(cam, dtype=np.float32), nan=0.0), 0.0, 1.0)
    heat = np.clip(np.asarray(Image.fromarray(heat).resize(size, Image.Resampling.BILINEAR)), 0.0, 1.0)
    stops = np.array([s for s, _ in _RAMP])
    colours = np.array([c for _, c in _RAMP], dtype=np.float32)
    rgba = np.empty((size[1], size[0], 4), dtype=np.uint8)
    for k in range(3):
        rgba[..., k] = np.interp(heat, stops, colours[:, k]).astype(np.uint8)
    rgba[..., 3] = (255 * (0.15 + 0.5 * heat)).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(rgba).save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


def segmentation_overlay_png(photo_size: tuple[int, int], classes, colours) -> bytes:
    """A class map (HxW class indices) painted with `colours` ([C, 3] uint8) as a semi-transparent RGBA PNG with the
    photo's aspect ratio, to be laid over the photo by the page. Only the map travels: no pixels of the photo."""
    import numpy as np

    width, height = photo_size
    scale = min(1.0, OVERLAY_MAX_SIDE / max(width, height))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    classes = np.asarray(classes, dtype=np.uint8)
    stretched = np.asarray(Image.fromarray(classes).resize(size, Image.Resampling.NEAREST))
    colours = np.asarray(colours, dtype=np.uint8)
    rgba = np.empty((size[1], size[0], 4), dtype=np.uint8)
    rgba[..., :3] = colours[np.minimum(stretched, len(colours) - 1)]
    rgba[..., 3] = 150
    buffer = io.BytesIO()
    Image.fromarray(rgba).save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


# --- game photos ------------------------------------------------------------------------------------------------
# Game photos pass the same door as uploads (decode, upright, sRGB, re-encode with no metadata at all), with their
# own size and format. They are stored under the hash of the cleaned bytes, so a name says nothing of the source.

GAME_PHOTO_MAX_SIDE = 1600
GAME_PHOTO_FORMATS = {"JPEG": ".jpg", "WEBP": ".webp"}
GAME_PHOTO_QUALITY = {"JPEG": 88, "WEBP": 75}
GAME_PHOTO_MAX_BYTES = 25 * 1024 * 1024
GAME_PHOTO_MAX_PIXELS = 60_000_000


@dataclass(frozen=True)
class CleanPhoto:
    """A game photo as the app stores and serves it: JPEG or WebP bytes without any metadata block."""

    data: bytes
    format: str
    width: int
    height: int

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def name(self) -> str:
        """The content-hash file name (no folder)."""
        return f"{self.sha256[:32]}{GAME_PHOTO_FORMATS[self.format]}"

    @property
    def content_type(self) -> str:
        return "image/webp" if self.format == "WEBP" else "image/jpeg"


def clean_game_photo(data: bytes, *, max_side: int = GAME_PHOTO_MAX_SIDE, format: str = "JPEG",
                     quality: int | None = None, max_bytes: int = GAME_PHOTO_MAX_BYTES,
                     max_pixels: int = GAME_PHOTO_MAX_PIXELS) -> CleanPhoto:
    """Decode a game photo completely, upright it, convert it to sRGB and re-encode it at most `max_side` pixels on
    the long side as JPEG or WebP, writing no EXIF, XMP, IPTC, ICC, comment or thumbnail. The same input and
    arguments always give the same bytes. Raises `RejectedImage` with the reason."""
    if format not in GAME_PHOTO_FORMATS:
        raise ValueError(f"game photos are stored as {' or '.join(GAME_PHOTO_FORMATS)}, not {format}")
    if not data:
        raise RejectedImage("the file is empty")
    if len(data) > max_bytes:
        raise RejectedImage(f"the file is {len(data) / 2**20:.1f} MB; the limit is {max_bytes / 2**20:.3g} MB",
                            status=413)
    image = _open(data)
    width, height = image.size
    if width < 1 or height < 1:
        raise RejectedImage("the image has no pixels")
    if width * height > max_pixels:
        raise RejectedImage(f"the image has {width * height / 1e6:.3g} MP; the limit is {max_pixels / 1e6:g} MP",
                            status=413)
    rgb = _decode(image)
    if max(rgb.size) > max_side:
        rgb.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    quality = GAME_PHOTO_QUALITY[format] if quality is None else quality
    if format == "WEBP":
        rgb.save(buffer, format="WEBP", quality=quality, method=4)
    else:
        rgb.save(buffer, format="JPEG", quality=quality, optimize=True)
    return CleanPhoto(data=buffer.getvalue(), format=format, width=rgb.width, height=rgb.height)


def accept_clean_photo(data: bytes, *, max_side: int = GAME_PHOTO_MAX_SIDE) -> CleanPhoto:
    """Take a photo this door wrote earlier (the committed starter pack) without encoding it again: it must be a
    JPEG or WebP with no metadata block, at most `max_side` pixels, and decode completely."""
    from core.photo_metadata import NotParseable, metadata_blocks

    try:
        image = Image.open(io.BytesIO(data), formats=tuple(GAME_PHOTO_FORMATS))
        blocks = metadata_blocks(data)
    except (UnidentifiedImageError, NotParseable, OSError, ValueError, SyntaxError):
        raise RejectedImage("not a JPEG or WebP file written by the image door") from None
    if blocks:
        raise RejectedImage(f"the file carries metadata ({', '.join(blocks[:3])}): clean it first")
    if max(image.size) > max_side:
        raise RejectedImage(f"the image is {image.width}×{image.height}; at most {max_side} px on a side")
    try:
        image.load()
    except (OSError, ValueError, SyntaxError, EOFError):
        raise RejectedImage("the image is damaged or incomplete") from None
    return CleanPhoto(data=data, format=image.format, width=image.width, height=image.height)

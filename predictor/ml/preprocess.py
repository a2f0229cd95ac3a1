"""Turning a photo into the network's input: decode, resize, the test-time crops and their aggregation.

Default (the PyTorch re-implementation): shorter side -> 256, FiveCrop 224 (4 corners + centre), softmax per crop,
element-wise max over crops. "three" is the TF original's three 224 crops along the long side (shorter side ->
224) and is usually paired with "mean". The scene classifier sees the whole photo resized to 224x224.
"""
from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PHOTO_FORMATS = ("JPEG", "PNG", "WEBP", "HEIF", "AVIF", "GIF", "BMP", "TIFF")
DEFAULT_MAX_PIXELS = 40_000_000
CROP_MODES = ("five", "three", "center")
AGGREGATIONS = ("max", "mean")


def _photo_formats() -> list[str]:
    try:  # HEIC photos from phones: the pillow-heif plugin, when installed
        import pillow_heif

        pillow_heif.register_heif_opener()
    except ImportError:
        pass
    Image.init()
    return [f for f in PHOTO_FORMATS if f in Image.OPEN]


IMAGE_FORMATS = _photo_formats()


class ImageDecodeError(ValueError):
    """The bytes are not an image we accept (unknown format, truncated, too many pixels)."""


@dataclass(frozen=True)
class CropSpec:
    mode: str = "five"
    resize: int = 256  # shorter side before cropping ("three" uses the crop size instead)
    size: int = 224
    aggregation: str = "max"
    scene_size: int = 224

    def __post_init__(self):
        if self.mode not in CROP_MODES:
            raise ValueError(f"crop mode must be one of {CROP_MODES}, not {self.mode!r}")
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {AGGREGATIONS}, not {self.aggregation!r}")
        if self.size > self.resize and self.mode != "three":
            raise ValueError("crop size must not exceed the resize size")

    @property
    def num_crops(self) -> int:
        return {"five": 5, "three": 3, "center": 1}[self.mode]

    @property
    def short_side(self) -> int:
        return self.size if self.mode == "three" else self.resize

    @classmethod
    def from_config(cls, config: dict | None) -> "CropSpec":
        config = dict(config or {})
        return cls(mode=config.get("crops", "five"), resize=int(config.get("resize", 256)),
                   size=int(config.get("crop_size", 224)), aggregation=config.get("aggregation", "max"),
                   scene_size=int(config.get("scene_size", 224)))

    def to_config(self) -> dict:
        return {"crops": self.mode, "resize": self.resize, "crop_size": self.size, "aggregation": self.aggregation,
                "scene_size": self.scene_size, "normalisation": "imagenet"}


@dataclass(frozen=True)
class CropGeometry:
    """Where the crops lie: the resized image's size and each crop's top-left corner in it (pixels)."""

    resized_width: int
    resized_height: int
    offsets: tuple[tuple[int, int], ...]  # (left, top)
    size: int
    original_width: int
    original_height: int


def resized_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    scale = short_side / min(width, height)
    return max(short_side, int(width * scale + 0.5)), max(short_side, int(height * scale + 0.5))


def crop_geometry(width: int, height: int, spec: CropSpec) -> CropGeometry:
    rw, rh = resized_size(width, height, spec.short_side)
    s = spec.size
    if spec.mode == "five":
        # torchvision FiveCrop order: top-left, top-right, bottom-left, bottom-right, centre.
        offsets = ((0, 0), (rw - s, 0), (0, rh - s), (rw - s, rh - s),
                   (int(round((rw - s) / 2.0)), int(round((rh - s) / 2.0))))
    elif spec.mode == "three":
        step = (max(rw, rh) - s) // 2
        offsets = tuple((i * step, 0) if rw >= rh else (0, i * step) for i in range(3))
    else:
        offsets = ((int(round((rw - s) / 2.0)), int(round((rh - s) / 2.0))),)
    return CropGeometry(rw, rh, offsets, s, width, height)


def open_image(source: str | Path | bytes | Image.Image, *, max_pixels: int = DEFAULT_MAX_PIXELS,
               draft_short_side: int | None = None) -> Image.Image:
    """An RGB image with EXIF orientation applied, from a path, bytes or a PIL image.

    JPEGs are decoded at a reduced DCT scale when `draft_short_side` allows it, which is several times faster for
    phone photos. Only common photo formats are opened; anything else is an `ImageDecodeError`.
    """
    if isinstance(source, Image.Image):
        image = source
    else:
        try:
            fp = io.BytesIO(source) if isinstance(source, (bytes, bytearray, memoryview)) else open(source, "rb")
        except OSError as error:
            raise ImageDecodeError(f"cannot read {source}: {error.strerror or error}") from None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                image = Image.open(fp, formats=IMAGE_FORMATS)
        except Image.UnidentifiedImageError:
            raise ImageDecodeError(f"not a supported image (accepted: {', '.join(IMAGE_FORMATS)})") from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
            raise ImageDecodeError(f"image refused: {error}") from None
        except OSError as error:
            raise ImageDecodeError(f"unreadable image: {error}") from None
    if image.width * image.height > max_pixels:
        raise ImageDecodeError(f"image has {image.width}x{image.height} pixels, more than the limit of {max_pixels:,}")
    if image.width < 1 or image.height < 1:
        raise ImageDecodeError("image is empty")
    try:
        if draft_short_side and image.format == "JPEG":
            w, h = image.size
            # Keep the shorter side at least `draft_short_side` so the later resize still downsamples.
            scale = min(w, h) / draft_short_side
            image.draft("RGB", (int(w / scale) + 1, int(h / scale) + 1))
        image = ImageOps.exif_transpose(image)
        image = image.convert("RGB")
        image.load()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise ImageDecodeError(f"unreadable image: {error}") from None
    return image


def _normalise(batch: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN, dtype=batch.dtype, device=batch.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=batch.dtype, device=batch.device).view(1, 3, 1, 1)
    return (batch - mean) / std


def _to_tensor(image: Image.Image) -> torch.Tensor:
    array = np.asarray(image, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1)  # uint8 [3, H, W]


# The resized photo (shorter side -> `resize`) is made in one piece while its longer side is at most this many
# times its shorter side (every photo up to 4:1). A longer strip has each crop resampled straight from its box in the
# photo, so no buffer grows with the photo's longer side (a 2048 x 1 strip would otherwise resize to 524,288 x 256).
MAX_RESIZED_ASPECT = 4


def _in_one_piece(geometry: CropGeometry) -> bool:
    long_side, short_side = max(geometry.resized_width, geometry.resized_height), \
        min(geometry.resized_width, geometry.resized_height)
    return long_side <= MAX_RESIZED_ASPECT * short_side


def prepare_pil(image: Image.Image, spec: CropSpec) -> tuple[torch.Tensor, torch.Tensor, CropGeometry]:
    """(crops [k, 3, s, s], scene input [3, S, S]) normalised float32, and the crop geometry."""
    geometry = crop_geometry(image.width, image.height, spec)
    s = spec.size
    if _in_one_piece(geometry):
        resized = _to_tensor(image.resize((geometry.resized_width, geometry.resized_height), Image.BILINEAR,
                                          reducing_gap=3.0))
        crops = torch.stack([resized[:, top:top + s, left:left + s] for left, top in geometry.offsets])
    else:
        sx, sy = image.width / geometry.resized_width, image.height / geometry.resized_height
        crops = torch.stack([_to_tensor(image.resize((s, s), Image.BILINEAR,
                                                     box=(left * sx, top * sy, (left + s) * sx, (top + s) * sy)))
                             for left, top in geometry.offsets])
    scene = _to_tensor(image.resize((spec.scene_size, spec.scene_size), Image.BILINEAR, reducing_gap=3.0))
    crops = _normalise(crops.float().div_(255.0))
    scene = _normalise(scene.float().div_(255.0)[None])[0]
    return crops, scene, geometry


def prepare_tensor(image: torch.Tensor, spec: CropSpec) -> tuple[torch.Tensor, torch.Tensor, CropGeometry]:
    """Like `prepare_pil` for a decoded uint8 [3, H, W] tensor on any device (the GPU path after nvJPEG)."""
    if image.shape[0] == 1:
        image = image.expand(3, -1, -1)
    _, h, w = image.shape
    geometry = crop_geometry(w, h, spec)
    s = spec.size
    x = image[None].float().div_(255.0)
    if _in_one_piece(geometry):
        resized = F.interpolate(x, size=(geometry.resized_height, geometry.resized_width), mode="bilinear",
                                antialias=True, align_corners=False)[0]
        crops = torch.stack([resized[:, top:top + s, left:left + s] for left, top in geometry.offsets])
    else:
        sx, sy = w / geometry.resized_width, h / geometry.resized_height
        crops = []
        for left, top in geometry.offsets:
            # The crop's box in the photo, to whole pixels (at least one): at most half a photo pixel off.
            x0, y0 = min(w - 1, int(left * sx)), min(h - 1, int(top * sy))
            x1, y1 = max(x0 + 1, min(w, round((left + s) * sx))), max(y0 + 1, min(h, round((top + s) * sy)))
            crops.append(F.interpolate(x[:, :, y0:y1, x0:x1], size=(s, s), mode="bilinear", antialias=True,
                                       align_corners=False)[0])
        crops = torch.stack(crops)
    scene = F.interpolate(x, size=(spec.scene_size, spec.scene_size), mode="bilinear", antialias=True,
                          align_corners=False)
    return _normalise(crops.clamp_(0, 1)), _normalise(scene.clamp_(0, 1))[0], geometry


def aggregate_crops(probabilities: torch.Tensor, num_crops: int, aggregation: str) -> torch.Tensor:
    """[N * k, n] per-crop probabilities -> [N, n] per image (element-wise max or mean over the k crops)."""
    grouped = probabilities.view(-1, num_crops, probabilities.shape[-1])
    return grouped.amax(dim=1) if aggregation == "max" else grouped.mean(dim=1)

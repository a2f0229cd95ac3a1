"""Class activation maps: where in the photo the evidence for a predicted cell lies.

CAM = sum_k w_k * A_k over the last convolutional activations A of each crop, with w the head's weight vector of
the predicted class (bias ignored). Each crop's map is upsampled to the crop's place on a grid with the resized
photo's aspect ratio (the resized photo itself, up to CAM_MAX_SIDE pixels on its longer side), averaged where crops
overlap, and min-max normalised to 0..1. The grid never grows with the photo: a map is at most CAM_MAX_SIDE^2 floats.
"""
from __future__ import annotations

import io

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .preprocess import CropGeometry


def crop_activation_maps(features: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """[k, C, h, w] activations and [C] class weights -> [k, h, w] maps."""
    return torch.einsum("kchw,c->khw", features.float(), weights.float().to(features.device))


# Longer side of the grid a map is computed on. The overlays the app stores are at most 512 pixels
# (core.images.OVERLAY_MAX_SIDE), so a finer grid would show nothing more.
CAM_MAX_SIDE = 512


def cam_grid(geometry: CropGeometry) -> tuple[int, int, float]:
    """(height, width, scale) of the grid a photo's maps are computed on: the resized photo, shrunk by `scale` so
    that its longer side is at most CAM_MAX_SIDE; each side at least one cell."""
    scale = min(1.0, CAM_MAX_SIDE / max(geometry.resized_width, geometry.resized_height))
    return (max(1, round(geometry.resized_height * scale)), max(1, round(geometry.resized_width * scale)), scale)


def class_activation_map(features: torch.Tensor, weights: torch.Tensor, geometry: CropGeometry) -> np.ndarray:
    """The photo's CAM on its grid (`cam_grid`: the resized photo's resolution up to CAM_MAX_SIDE), float32 in
    0..1, shape [grid_h, grid_w]."""
    return class_activation_maps(features, weights[None], geometry)[0]


def class_activation_maps(features: torch.Tensor, weights: torch.Tensor, geometry: CropGeometry) -> np.ndarray:
    """CAMs of several classes from one photo's activations: [k, C, h, w] and [n, C] -> [n, grid_h, grid_w].

    The activations are computed once per photo, so each further class costs one weighted sum and one upsampling.
    """
    maps = torch.einsum("kchw,nc->nkhw", features.float(), weights.float().to(features.device)).cpu()
    n = maps.shape[0]
    height, width, scale = cam_grid(geometry)
    canvas = torch.zeros((n, height, width), dtype=torch.float32)
    count = torch.zeros((height, width), dtype=torch.float32)
    for crop, (left, top) in enumerate(geometry.offsets):
        # The crop's place on the grid, to whole cells (at least one); at scale 1 exactly the crop's pixels.
        x0, y0 = min(width - 1, int(left * scale)), min(height - 1, int(top * scale))
        x1 = max(x0 + 1, min(width, round((left + geometry.size) * scale)))
        y1 = max(y0 + 1, min(height, round((top + geometry.size) * scale)))
        canvas[:, y0:y1, x0:x1] += F.interpolate(maps[:, crop:crop + 1], size=(y1 - y0, x1 - x0), mode="bilinear",
                                                 align_corners=False)[:, 0]
        count[y0:y1, x0:x1] += 1
    covered = count > 0
    canvas[:, covered] /= count[covered]
    if covered.any():
        # Pixels no crop covers take the lowest covered value, so they do not look like evidence.
        lowest = canvas[:, covered].min(dim=1).values
        canvas[:, ~covered] = lowest[:, None]
    low = canvas.flatten(1).min(dim=1).values[:, None, None]
    high = canvas.flatten(1).max(dim=1).values[:, None, None]
    spread = high - low
    canvas = torch.where(spread > 0, (canvas - low) / spread.clamp_min(1e-12), torch.zeros_like(canvas))
    return canvas.numpy().astype(np.float32)


def render_cam_png(image: Image.Image, cam: np.ndarray, *, heat_share: float = 0.4,
                   max_side: int | None = 1024) -> bytes:
    """PNG of the photo in grayscale blended with a jet-coloured CAM (heat_share of the jet colour)."""
    from matplotlib import colormaps

    image = image.convert("RGB")
    if max_side and max(image.size) > max_side:
        scale = max_side / max(image.size)
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                             Image.BILINEAR)
    heat = Image.fromarray(np.uint8(np.clip(cam, 0, 1) * 255)).resize(image.size, Image.BILINEAR)
    colours = colormaps["jet"](np.asarray(heat, dtype=np.float32) / 255.0)[..., :3]
    gray = np.asarray(image.convert("L"), dtype=np.float32)[..., None] / 255.0
    blended = (1 - heat_share) * gray + heat_share * colours
    out = io.BytesIO()
    Image.fromarray(np.uint8(np.clip(blended, 0, 1) * 255)).save(out, format="PNG", optimize=False)
    return out.getvalue()

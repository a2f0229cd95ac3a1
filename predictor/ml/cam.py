"""Class activation maps: where in the photo the evidence for a predicted cell lies.

CAM = sum_k w_k * A_k over the last convolutional activations A of each crop, with w the head's weight vector of
the predicted class (bias ignored). Each crop's map is upsampled to the crop, pasted at the crop's offset in the
resized photo, averaged where crops overlap, and min-max normalised to 0..1.
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


def class_activation_map(features: torch.Tensor, weights: torch.Tensor, geometry: CropGeometry) -> np.ndarray:
    """The photo's CAM at the resized photo's resolution, float32 in 0..1, shape [resized_h, resized_w]."""
    return class_activation_maps(features, weights[None], geometry)[0]


def class_activation_maps(features: torch.Tensor, weights: torch.Tensor, geometry: CropGeometry) -> np.ndarray:
    """CAMs of several classes from one photo's activations: [k, C, h, w] and [n, C] -> [n, resized_h, resized_w].

    The activations are computed once per photo, so each further class costs one weighted sum and one upsampling.
    """
    maps = torch.einsum("kchw,nc->nkhw", features.float(), weights.float().to(features.device))
    n, k = maps.shape[:2]
    size = geometry.size
    upsampled = F.interpolate(maps.reshape(n * k, 1, *maps.shape[2:]), size=(size, size), mode="bilinear",
                              align_corners=False).reshape(n, k, size, size).cpu()
    canvas = torch.zeros((n, geometry.resized_height, geometry.resized_width), dtype=torch.float32)
    count = torch.zeros((geometry.resized_height, geometry.resized_width), dtype=torch.float32)
    for crop, (left, top) in enumerate(geometry.offsets):
        canvas[:, top:top + size, left:left + size] += upsampled[:, crop]
        count[top:top + size, left:left + size] += 1
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

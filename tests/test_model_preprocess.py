"""Test-time crops, their aggregation, and opening photos (EXIF orientation, draft decoding, refusals)."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from predictor.ml.preprocess import (IMAGENET_MEAN, IMAGENET_STD, CropSpec, ImageDecodeError, aggregate_crops,
                                     crop_geometry, open_image, prepare_pil, prepare_tensor)


def _unnormalise(x: torch.Tensor) -> torch.Tensor:
    return x * torch.tensor(IMAGENET_STD).view(3, 1, 1) + torch.tensor(IMAGENET_MEAN).view(3, 1, 1)


def test_five_crops_are_the_corners_and_centre_of_the_256_resize():
    geometry = crop_geometry(400, 300, CropSpec())
    assert (geometry.resized_width, geometry.resized_height) == (341, 256)
    assert geometry.offsets == ((0, 0), (117, 0), (0, 32), (117, 32), (58, 16))


def test_three_crops_run_along_the_long_side_as_in_the_tf_original():
    spec = CropSpec(mode="three", aggregation="mean")
    landscape = crop_geometry(896, 448, spec)
    assert (landscape.resized_width, landscape.resized_height) == (448, 224)
    assert landscape.offsets == ((0, 0), (112, 0), (224, 0))
    portrait = crop_geometry(300, 600, spec)
    assert portrait.offsets == ((0, 0), (0, 112), (0, 224))
    assert set(crop_geometry(500, 500, spec).offsets) == {(0, 0)}  # square: three identical crops


def test_crop_pixels_come_from_their_offsets():
    # A photo whose red channel encodes x and green channel encodes y, already at the resized size.
    xs, ys = np.meshgrid(np.arange(341), np.arange(256))
    array = np.stack([xs % 256, ys, np.zeros_like(xs)], axis=-1).astype(np.uint8)
    crops, scene, geometry = prepare_pil(Image.fromarray(array), CropSpec())
    assert crops.shape == (5, 3, 224, 224) and scene.shape == (3, 224, 224)
    pixels = (_unnormalise(crops) * 255).round()
    for crop, (left, top) in zip(pixels, geometry.offsets):
        assert crop[0, 0, 0].item() == left % 256 and crop[1, 0, 0].item() == top
        assert crop[1, 223, 0].item() == top + 223


def test_tensor_path_matches_the_pillow_path_closely():
    rng = np.random.default_rng(0)
    array = (rng.random((300, 400, 3)) * 255).astype(np.uint8)
    array = np.asarray(Image.fromarray(array).resize((40, 30)).resize((400, 300), Image.BILINEAR))
    crops_pil, scene_pil, _ = prepare_pil(Image.fromarray(array), CropSpec())
    crops_t, scene_t, _ = prepare_tensor(torch.from_numpy(array.copy()).permute(2, 0, 1), CropSpec())
    assert crops_t.shape == crops_pil.shape
    assert (crops_t - crops_pil).abs().mean().item() < 0.05


def test_aggregation_is_max_or_mean_over_each_photos_crops():
    probs = torch.tensor([[0.1, 0.9], [0.7, 0.3], [0.5, 0.5], [0.2, 0.8]])  # 2 photos x 2 crops
    assert torch.allclose(aggregate_crops(probs, 2, "max"), torch.tensor([[0.7, 0.9], [0.5, 0.8]]))
    assert torch.allclose(aggregate_crops(probs, 2, "mean"), torch.tensor([[0.4, 0.6], [0.35, 0.65]]))


def test_exif_orientation_is_applied_when_opening_files(tmp_path):
    image = Image.new("RGB", (80, 40), (10, 200, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = tmp_path / "rotated.jpg"
    image.save(path, format="JPEG", exif=exif.tobytes())
    opened = open_image(path)
    assert opened.size == (40, 80)


def test_draft_decodes_large_jpegs_at_reduced_scale_but_not_below_the_crop_side():
    buffer = io.BytesIO()
    Image.new("RGB", (2400, 1600), (90, 90, 90)).save(buffer, format="JPEG")
    opened = open_image(buffer.getvalue(), draft_short_side=256)
    assert min(opened.size) >= 256 and opened.size[0] <= 1200


@pytest.mark.parametrize("payload, message", [
    (b"definitely not an image", "not a supported image"),
    (b"\xff\xd8\xff\xe0" + b"\x00" * 40, "(?i)unreadable|not a supported"),
])
def test_broken_files_raise_a_clear_error(payload, message):
    with pytest.raises(ImageDecodeError, match=message):
        open_image(payload)


def test_too_many_pixels_are_refused():
    buffer = io.BytesIO()
    Image.new("RGB", (1000, 1000)).save(buffer, format="PNG")
    with pytest.raises(ImageDecodeError, match="more than the limit"):
        open_image(buffer.getvalue(), max_pixels=500_000)


def test_crop_spec_refuses_unknown_modes():
    with pytest.raises(ValueError, match="crop mode"):
        CropSpec(mode="ten")
    with pytest.raises(ValueError, match="aggregation"):
        CropSpec(aggregation="median")

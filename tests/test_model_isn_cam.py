"""ISN routing (each scene concept's network gets its photos) and class activation maps."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from predictor.ml.cam import class_activation_map, render_cam_png
from predictor.ml.isn import ISN
from predictor.ml.network import GeoNetwork
from predictor.ml.prediction import S3_CONCEPTS
from predictor.ml.preprocess import CropSpec, crop_geometry


def _marked_networks():
    """Three tiny networks; network c always answers class c of the last head, so outputs reveal who answered."""
    torch.manual_seed(0)
    networks = {}
    for c, concept in enumerate(S3_CONCEPTS):
        network = GeoNetwork("tiny", [4, 6]).eval()
        with torch.no_grad():
            network.heads[1].bias.zero_()
            network.heads[1].bias[c] = 1000.0
        networks[concept] = network
    return networks


def test_each_concepts_network_gets_exactly_its_rows():
    networks = _marked_networks()
    seen = {}
    for concept, network in networks.items():
        network.register_forward_hook(lambda m, inp, out, concept=concept: seen.setdefault(concept, []).append(
            inp[0].shape[0]))
    isn = ISN(networks)
    concepts = torch.tensor([2, 0, 2, 1, 0, 2])
    x = torch.randn(6, 3, 32, 32)
    with torch.no_grad():
        logits = isn(x, concepts)
    assert [tuple(t.shape) for t in logits] == [(6, 4), (6, 6)]
    assert logits[1].argmax(dim=1).tolist() == concepts.tolist()
    assert seen == {"indoor": [2], "natural": [1], "urban": [3]}
    # Rows keep their own input: a row answered alone gives the same logits as inside the mixed batch.
    with torch.no_grad():
        alone = networks["urban"](x[2:3])
    assert torch.allclose(alone[0][0], logits[0][2], atol=1e-5)


def test_a_concept_without_photos_is_not_run():
    networks = _marked_networks()
    calls = []
    networks["indoor"].register_forward_hook(lambda *a: calls.append(1))
    with torch.no_grad():
        ISN(networks)(torch.randn(3, 3, 32, 32), torch.tensor([1, 2, 1]))
    assert calls == []


def test_single_base_network_answers_everything_and_bad_sets_are_refused():
    base = GeoNetwork("tiny", [4]).eval()
    isn = ISN({"base": base})
    assert not isn.routed
    with torch.no_grad():
        assert isn(torch.randn(2, 3, 32, 32), torch.tensor([0, 2]))[0].shape == (2, 4)
    with pytest.raises(ValueError, match="networks for"):
        ISN({"indoor": base, "urban": base})
    with pytest.raises(ValueError, match="share backbone"):
        ISN({"indoor": base, "natural": GeoNetwork("tiny", [5]), "urban": base})


def test_cam_peaks_where_the_class_evidence_is_and_covers_the_photo():
    spec = CropSpec()
    geometry = crop_geometry(400, 300, spec)  # resized 341 x 256, five 224 crops
    target_x, target_y = 300, 60
    grid = 7
    features = torch.zeros(5, 2, grid, grid)
    for k, (left, top) in enumerate(geometry.offsets):
        u, v = target_x - left, target_y - top
        if 0 <= u < spec.size and 0 <= v < spec.size:
            features[k, 0, v * grid // spec.size, u * grid // spec.size] = 5.0
        features[k, 1] = torch.rand(grid, grid)  # a channel the class does not use
    cam = class_activation_map(features, torch.tensor([1.0, 0.0]), geometry)
    assert cam.shape == (256, 341) and cam.dtype == np.float32
    assert cam.min() == 0.0 and cam.max() == pytest.approx(1.0)
    peak_y, peak_x = np.unravel_index(np.argmax(cam), cam.shape)
    assert abs(peak_x - target_x) <= 32 and abs(peak_y - target_y) <= 32
    assert cam[200:, :100].max() < 0.2  # far from the evidence stays cold


def test_cam_overlay_is_a_png_of_the_photo_size():
    photo = Image.new("RGB", (400, 300), (120, 120, 120))
    cam = np.zeros((256, 341), dtype=np.float32)
    cam[:, 300:] = 1.0
    png = render_cam_png(photo, cam)
    overlay = Image.open(io.BytesIO(png))
    assert overlay.format == "PNG" and overlay.size == (400, 300)
    pixels = np.asarray(overlay.convert("RGB"), dtype=int)
    # Hot region is red-ish (jet high end), cold region blue-ish (jet low end) over the grey photo.
    assert pixels[150, 390, 0] > pixels[150, 390, 2]
    assert pixels[150, 10, 2] > pixels[150, 10, 0]

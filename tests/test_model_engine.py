"""The inference engine: dynamic batching across threads, results in request order, per-photo errors."""
from __future__ import annotations

import io
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from predictor.ml.kinds import load_bundle
from predictor.ml.engine import InferenceEngine
from predictor.ml.prediction import HIERARCHY, S3_CONCEPTS, Prediction
from predictor.ml.preprocess import ImageDecodeError
from tests.conftest import make_jpeg


@pytest.fixture(scope="module")
def tiny_model(tiny_bundle):
    return load_bundle(tiny_bundle)


def _photos(n):
    rng = np.random.default_rng(7)
    return [make_jpeg(96 + 8 * (i % 5), 80, tuple(int(v) for v in rng.integers(0, 255, 3))) for i in range(n)]


def _fingerprint(prediction: Prediction):
    return [round(c.probability, 5) for c in prediction.top_cells[HIERARCHY][:3]]


def test_concurrent_submits_are_batched_and_answered_in_order(tiny_model):
    photos = _photos(24)
    with InferenceEngine(tiny_model, max_batch_size=8, max_wait_ms=100) as engine:
        alone = [engine.predict_batch([p])[0] for p in photos]
        results = [None] * len(photos)

        def client(indices):
            futures = [(i, engine.submit(photos[i])) for i in indices]
            for i, future in futures:
                results[i] = future.result(timeout=60)

        threads = [threading.Thread(target=client, args=(range(t, 24, 4),)) for t in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert all(isinstance(r, Prediction) for r in results)
    for mine, reference in zip(results, alone):
        assert _fingerprint(mine) == pytest.approx(_fingerprint(reference), abs=1e-4)
        assert (mine.lat, mine.lon) == (reference.lat, reference.lon)
    sizes = [r.timings_ms["batch_size"] for r in results]
    assert max(sizes) > 1 and max(sizes) <= 8


def test_a_corrupt_photo_fails_only_its_own_request(tiny_model):
    photos = _photos(3)
    truncated = photos[0][: len(photos[0]) // 3]
    with InferenceEngine(tiny_model, max_batch_size=8, max_wait_ms=50) as engine:
        results = engine.predict_many([photos[0], b"\x00garbage", photos[1], truncated, photos[2],
                                       Image.new("RGB", (50, 40), (1, 2, 3))])
    kinds = [type(r) for r in results]
    assert kinds[0] is kinds[2] is kinds[4] is kinds[5] is Prediction
    assert isinstance(results[1], ImageDecodeError) and "not a supported image" in str(results[1])
    assert isinstance(results[3], ImageDecodeError) and "unreadable" in str(results[3])


def test_prediction_carries_everything_the_ui_shows(tiny_model):
    with InferenceEngine(tiny_model, top_k=4) as engine:
        prediction = engine.submit(_photos(1)[0], cam=True).result(timeout=30)
    assert prediction.model_name == "tiny-untrained" and prediction.untrained
    assert set(prediction.scene.s3) == set(S3_CONCEPTS)
    assert sum(prediction.scene.s3.values()) == pytest.approx(1.0, abs=1e-4)
    assert prediction.scene.concept == max(prediction.scene.s3, key=prediction.scene.s3.get)
    assert len(prediction.scene.places365_top) == 5
    assert set(prediction.top_cells) == {"coarse", "middle", "fine", HIERARCHY}
    assert all(len(cells) == 4 for cells in prediction.top_cells.values())
    best = prediction.top_cells[HIERARCHY][0]
    assert (prediction.lat, prediction.lon) == (best.lat, best.lon) == prediction.argmax[HIERARCHY]
    assert best.probability <= prediction.confidence <= 1.0
    probabilities = [c.probability for c in prediction.top_cells["fine"]]
    assert probabilities == sorted(probabilities, reverse=True)
    assert prediction.cam is not None and prediction.cam.shape == (256, 307)  # 96x80 photo -> 307x256
    assert {"decode_ms", "model_ms", "total_ms", "queue_ms"} <= set(prediction.timings_ms)
    assert prediction.to_dict()["top_cells"]["fine"][0]["token"] == prediction.top_cells["fine"][0].token


def test_photos_go_to_the_network_of_their_scene(tiny_bundle):
    model = load_bundle(tiny_bundle)
    natural = int(np.argmax(model.scene.s3_matrix[:, 1].numpy()))
    with torch.no_grad():  # make the scene classifier certain of a purely natural Places365 class
        model.scene.network.heads[0].bias.zero_()
        model.scene.network.heads[0].bias[natural] = 1000.0
    calls = {c: 0 for c in S3_CONCEPTS}
    for concept in S3_CONCEPTS:
        model.isn.networks[concept].register_forward_hook(
            lambda m, i, o, concept=concept: calls.__setitem__(concept, calls[concept] + i[0].shape[0]))
    with InferenceEngine(model, max_batch_size=4, max_wait_ms=50) as engine:
        results = engine.predict_many(_photos(3))
    assert [r.scene.concept for r in results] == ["natural"] * 3
    assert calls == {"indoor": 0, "natural": 15, "urban": 0}  # 3 photos x 5 crops


def test_closed_engine_refuses_new_work(tiny_model):
    engine = InferenceEngine(tiny_model)
    engine.close()
    with pytest.raises(RuntimeError, match="closed"):
        engine.submit(_photos(1)[0])


def test_padded_bucket_execution_gives_the_same_answers(tiny_model):
    """The compiled path pads each call to a fixed bucket and splits what exceeds the largest; answers must not
    change. Eager modules stand in for the compiled ones (compiling takes too long for a unit test)."""
    photos = _photos(7)
    with InferenceEngine(tiny_model, max_batch_size=8, max_wait_ms=50, batch_buckets=(1, 2)) as engine:
        plain = engine.predict_batch(photos)
        calls = []
        engine._compiled = {id(n): (lambda x, n=n: (calls.append(x.shape[0]), n(x))[1]) for n in engine._networks()}
        padded = engine.predict_batch(photos)
    assert set(calls) <= {1, 2, 5, 10}  # photos for the scene net, photos x 5 crops for the geo nets
    for a, b in zip(plain, padded):
        assert _fingerprint(a) == pytest.approx(_fingerprint(b), abs=1e-5)
        assert (a.lat, a.lon) == (b.lat, b.lon)


def test_device_jpeg_decode_path_pins_errors_to_their_photos(tiny_model):
    """The nvJPEG path (exercised here with torchvision's decoder on the CPU): a bad JPEG in the list fails alone."""
    photos = _photos(2)
    broken = photos[0][: len(photos[0]) // 2]  # a valid header, then the data stops
    engine = InferenceEngine(tiny_model, start=False)
    engine.gpu_decode = True
    try:
        results = engine.predict_batch([photos[0], broken, photos[1]])
        reference = InferenceEngine(tiny_model, start=False).predict_batch(photos)
    finally:
        engine.close()
    assert isinstance(results[1], ImageDecodeError) and "truncated" in str(results[1])
    assert isinstance(results[0], Prediction) and isinstance(results[2], Prediction)
    # Same photo, different decoder and resizer: the probabilities agree closely.
    assert results[0].top_cells[HIERARCHY][0].probability == pytest.approx(
        reference[0].top_cells[HIERARCHY][0].probability, rel=0.05)

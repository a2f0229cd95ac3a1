"""Search within Cell and Prediction Density, the bundle-free parts (predictor.ml.retrieval): the contrastive
retrieval head learns to bring nearby photos together, the background collection is searched inside cells only, the
answer is the medoid of the densest cluster, PD follows MeVer's definition."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from predictor.ml.geodesy import great_circle_km
from predictor.ml.retrieval import (BackgroundCollection, RetrievalHead, SearchSettings, bytes_per_image,
                                    contrastive_loss, densest_cluster_medoid, prediction_density, refine,
                                    write_background)

PLACES = np.array([(48.85, 2.35), (51.5, -0.12), (40.7, -74.0), (35.7, 139.7), (-33.9, 151.2), (55.75, 37.6)])


def _synthetic_features(n_per_place: int, *, seed: int):
    """Backbone-like features: a place signature in 6 of 64 dims, beside as much noise in each of the other 58."""
    signatures = np.random.default_rng(0).normal(0, 1.0, (len(PLACES), 6))  # what each place looks like
    rng = np.random.default_rng(seed)
    features, lats, lons, place = [], [], [], []
    for k, (lat, lon) in enumerate(PLACES):
        for _ in range(n_per_place):
            x = np.concatenate([signatures[k] + rng.normal(0, 0.25, 6), rng.normal(0, 1.0, 58)])
            features.append(x)
            lats.append(lat + rng.uniform(-0.05, 0.05))
            lons.append(lon + rng.uniform(-0.05, 0.05))
            place.append(k)
    return (torch.tensor(np.array(features), dtype=torch.float32), torch.tensor(lats), torch.tensor(lons),
            np.array(place))


def _recall_at_1(head: RetrievalHead, features, place) -> float:
    with torch.no_grad():
        z = head(features)
    sims = z @ z.T
    sims.fill_diagonal_(-2)
    nearest = sims.argmax(dim=1).numpy()
    return float(np.mean(place[nearest] == place))


def test_contrastive_head_makes_nearby_photos_retrieve_each_other():
    torch.manual_seed(0)
    train_x, train_lat, train_lon, _ = _synthetic_features(64, seed=1)
    test_x, _, _, test_place = _synthetic_features(12, seed=2)
    head = RetrievalHead(64, dim=32)
    before = _recall_at_1(head, test_x, test_place)
    optimiser = torch.optim.Adam(head.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(200):
        batch = torch.randperm(train_x.shape[0], generator=generator)[:64]
        loss = contrastive_loss(head(train_x[batch]), train_lat[batch], train_lon[batch], positive_km=25)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    after = _recall_at_1(head, test_x, test_place)
    chance = 1 / len(PLACES)
    # Held-out photos: the nearest embedding is a photo of the same place far more often than chance, and far more
    # often than with the untrained head.
    assert after >= 0.9, (before, after)
    assert after > before + 0.25 and after > 3 * chance


def test_contrastive_loss_positives_by_distance_or_cell():
    z = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [-1.0, 0.0]]), dim=1)
    lat = torch.tensor([48.85, 48.86, 10.0, -40.0])
    lon = torch.tensor([2.35, 2.36, 10.0, 100.0])
    near = contrastive_loss(z, lat, lon, positive_km=5)
    # The same embeddings with the pairs swapped: photo 0's positive is now the orthogonal one -> larger loss.
    far = contrastive_loss(z[[0, 2, 1, 3]], lat, lon, positive_km=5)
    assert near < far
    # Nothing within 1 m and no cells: no positive pair, zero loss that still back-propagates.
    w = z.clone().requires_grad_(True)
    none = contrastive_loss(w, lat, lon, positive_km=0.001)
    none.backward()
    assert float(none.detach()) == 0.0 and w.grad is not None
    # Same fine cell counts as positive even when far apart.
    by_cell = contrastive_loss(z, lat, lon, positive_km=0.001, cells=torch.tensor([0, 1, 2, 0]))
    assert float(by_cell) > 0


def test_densest_cluster_medoid_answers_inside_the_largest_cluster():
    rng = np.random.default_rng(0)
    paris = np.array([(48.8566 + rng.normal(0, 0.002), 2.3522 + rng.normal(0, 0.002)) for _ in range(6)])
    scattered = np.array([(48.95, 2.5), (48.7, 2.1), (49.1, 2.9), (48.6, 2.6)])
    points = np.concatenate([scattered, paris])
    cluster = densest_cluster_medoid(points[:, 0], points[:, 1], eps_km=1.0)
    assert cluster.size == 6 and cluster.candidates == 10
    assert (cluster.lat, cluster.lon) in {tuple(p) for p in paris}  # a real background position, not a mean
    assert great_circle_km(cluster.lat, cluster.lon, 48.8566, 2.3522) < 0.5
    # A coarser eps merges everything into one cluster.
    assert densest_cluster_medoid(points[:, 0], points[:, 1], eps_km=100).size == 10


def test_prediction_density_is_mass_within_the_scale_of_the_top_cell():
    lat = np.array([48.85, 48.95, 51.5, 40.7])  # the second cell is ~11 km from the first
    lon = np.array([2.35, 2.35, -0.12, -74.0])
    probabilities = np.array([0.3, 0.25, 0.25, 0.2])
    assert prediction_density(probabilities, lat, lon, cell=0, scale_km=25) == pytest.approx(0.55)
    assert prediction_density(probabilities, lat, lon, cell=0, scale_km=1) == pytest.approx(0.3)
    assert prediction_density(probabilities, lat, lon, cell=0, scale_km=20000) == pytest.approx(1.0)


def _collection(tmp_path):
    rng = np.random.default_rng(3)
    # Cell 0 (Paris): 5 photos near one spot plus 3 spread; cell 2 (New York): 4 photos; cell 1 empty.
    coords = [(48.8584 + rng.normal(0, 0.001), 2.2945 + rng.normal(0, 0.001)) for _ in range(5)]
    coords += [(48.80, 2.20), (48.90, 2.45), (48.75, 2.40)]
    coords += [(40.7 + rng.normal(0, 0.01), -74.0 + rng.normal(0, 0.01)) for _ in range(4)]
    cells = np.array([0] * 8 + [2] * 4)
    embeddings = rng.normal(0, 1, (12, 16))
    embeddings[:5] = np.array([1.0] + [0.0] * 15) + rng.normal(0, 0.05, (5, 16))  # the tower's photos look alike
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    shuffled = rng.permutation(12)  # written in any order: the writer groups rows by cell
    write_background(tmp_path / "bg", embeddings=embeddings[shuffled], coords=np.array(coords)[shuffled],
                     cells=cells[shuffled], num_cells=3, partitioning="fine")
    return BackgroundCollection(tmp_path / "bg"), np.array(coords), embeddings


def test_background_collection_is_grouped_by_cell_and_searched_inside_it(tmp_path):
    background, coords, embeddings = _collection(tmp_path)
    assert background.images == 12 and background.dim == 16
    assert [background.count(c) for c in range(3)] == [8, 0, 4]
    assert background.embeddings.dtype == np.float16 and isinstance(background.embeddings, np.memmap)
    assert (tmp_path / "bg" / "embeddings.f16").stat().st_size == 12 * 16 * 2
    assert bytes_per_image(256) * 1_000_000 / 1e6 == 520  # MB per million images at 256-d
    query = np.array([1.0] + [0.0] * 15, dtype=np.float32)
    rows, sims = background.search(query, [0], 5)
    assert len(rows) == 5 and np.all(np.diff(sims) <= 1e-6)
    found = np.asarray(background.coords[rows])
    # All five are the tower's photos, all inside cell 0 (none of New York's, however similar).
    assert np.all(great_circle_km(found[:, 0], found[:, 1], 48.8584, 2.2945) < 1)
    rows, _ = background.search(query, [2], 10)
    assert len(rows) == 4 and np.all(np.asarray(background.coords[rows])[:, 0] < 41)
    assert background.search(query, [1], 5)[0].size == 0


def test_a_search_returns_the_exact_top_k_of_the_cells_searched(tmp_path):
    """The float16 store is scored in float32: the rows and similarities are those of a plain float32 search over
    the stored vectors, within one crowded cell and across cells searched together."""
    rng = np.random.default_rng(7)
    n = 6000
    embeddings = rng.standard_normal((n, 64)).astype(np.float32)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    cells = np.repeat([0, 1, 2], n // 3)
    write_background(tmp_path / "bg", embeddings=embeddings.astype(np.float16), coords=np.zeros((n, 2)),
                     cells=cells, num_cells=3, partitioning="fine")
    background = BackgroundCollection(tmp_path / "bg")
    stored = np.asarray(background.embeddings, dtype=np.float32)
    for seed in range(20):
        query = np.random.default_rng(seed).standard_normal(64).astype(np.float32)
        query /= np.linalg.norm(query)
        for searched in ([0], [1, 2]):
            rows, sims = background.search(query, searched, 10)
            inside = np.flatnonzero(np.isin(cells, searched))
            exact = stored[inside] @ query
            order = np.argsort(-exact, kind="stable")[:10]
            assert list(rows) == list(inside[order])
            np.testing.assert_allclose(sims, exact[order], rtol=0, atol=1e-6)


def test_refine_answers_the_cluster_medoid_with_pd_or_keeps_the_classifier_and_says_why(tmp_path):
    background, _, _ = _collection(tmp_path)
    cell_lat, cell_lon = np.array([48.85, 51.5, 40.7]), np.array([2.35, -0.12, -74.0])
    query = np.array([1.0] + [0.0] * 15, dtype=np.float32)
    settings = SearchSettings(top_k=6, eps_km=1.0, conf_thres=0.5, conf_scale_km=25)
    confident = refine(embedding=query, fine_probabilities=np.array([0.8, 0.1, 0.1]), cell_lat=cell_lat,
                       cell_lon=cell_lon, background=background, settings=settings, cell_tokens=["a", "b", "c"])
    assert confident.refined and confident.localizable and confident.density == pytest.approx(0.8)
    assert great_circle_km(confident.lat, confident.lon, 48.8584, 2.2945) < 1  # the tower, not the cell centre
    assert confident.cluster_size == 5 and "cell a" in confident.note
    unsure = refine(embedding=query, fine_probabilities=np.array([0.4, 0.3, 0.3]), cell_lat=cell_lat,
                    cell_lon=cell_lon, background=background, settings=settings)
    assert unsure.refined and not unsure.localizable and unsure.density == pytest.approx(0.4)
    missing = refine(embedding=query, fine_probabilities=np.array([0.1, 0.8, 0.1]), cell_lat=cell_lat,
                     cell_lon=cell_lon, background=background, settings=settings, cell_tokens=["a", "b", "c"])
    assert not missing.refined and (missing.lat, missing.lon) == (51.5, -0.12)
    assert "holds no photo in cell b" in missing.note
    # Searching the top two cells reaches the photos of the second one.
    both = refine(embedding=query, fine_probabilities=np.array([0.1, 0.5, 0.4]), cell_lat=cell_lat,
                  cell_lon=cell_lon, background=background, settings=SearchSettings(top_k=3, top_cells=2))
    assert both.refined and both.lat < 41


def test_the_fast_dbscan_agrees_with_scikit_learn():
    from sklearn.cluster import DBSCAN

    from predictor.ml.retrieval import dbscan_labels

    rng = np.random.default_rng(7)
    for trial in range(30):
        n = int(rng.integers(1, 40))
        centres = rng.uniform(-1, 1, (3, 2)) + [48.0, 2.0]
        points = centres[rng.integers(0, 3, n)] + rng.normal(0, 0.01 * (1 + trial % 4), (n, 2))
        eps, min_samples = float(rng.choice([0.5, 1.0, 3.0])), int(rng.choice([1, 2, 3]))
        ours = dbscan_labels(points[:, 0], points[:, 1], eps_km=eps, min_samples=min_samples)
        theirs = DBSCAN(eps=eps / 6371.0, min_samples=min_samples, metric="haversine").fit(
            np.radians(points)).labels_
        # Same noise, same partition into clusters (labels may be numbered differently).
        assert ((ours == -1) == (theirs == -1)).all()
        pairs = {(a, b) for a, b in zip(ours, theirs) if a >= 0}
        assert len(pairs) == len({a for a, _ in pairs}) == len({b for _, b in pairs})

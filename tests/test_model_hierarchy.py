"""f*: fine-cell probabilities times their parents', against hand-made numbers and the paper's partitionings."""
from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from predictor.ml.hierarchy import Hierarchy, hierarchical_probabilities
from predictor.ml.partitions import Partitioning, parent_matrix


def _partitioning(name, tokens, lat, lon):
    return Partitioning(name=name, tokens=tokens, counts=[100] * len(tokens), lat=lat, lon=lon)


@pytest.fixture
def nested():
    """Level-2 cell 0f (over Europe) split in two level-3 cells, one of them in two level-4 cells."""
    import s2sphere

    coarse_cell = s2sphere.CellId.from_token("0f")  # face 0 level 2
    other_coarse = s2sphere.CellId.from_token("0b")
    children = list(coarse_cell.children())
    fine_cells = list(children[0].children())[:2] + [children[1], list(other_coarse.children())[0]]
    middle_cells = [children[0], children[1], list(other_coarse.children())[0]]

    def centre(cell):
        ll = cell.to_lat_lng()
        return ll.lat().degrees, ll.lng().degrees

    coarse = _partitioning("coarse", [coarse_cell.to_token(), other_coarse.to_token()],
                           *zip(*[centre(coarse_cell), centre(other_coarse)]))
    middle = _partitioning("middle", [c.to_token() for c in middle_cells], *zip(*[centre(c) for c in middle_cells]))
    fine = _partitioning("fine", [c.to_token() for c in fine_cells], *zip(*[centre(c) for c in fine_cells]))
    return coarse, middle, fine


def test_parents_of_hand_made_nested_cells(nested):
    coarse, middle, fine = nested
    assert parent_matrix([coarse, middle, fine]).tolist() == [[0, 0, 0], [0, 0, 1], [0, 1, 2], [1, 2, 3]]


def test_fstar_is_the_plain_product_with_parents(nested):
    hierarchy = Hierarchy(list(nested))
    p_coarse = torch.tensor([[0.9, 0.1]])
    p_middle = torch.tensor([[0.2, 0.5, 0.3]])
    p_fine = torch.tensor([[0.4, 0.1, 0.2, 0.3]])
    scores = hierarchical_probabilities([p_coarse, p_middle, p_fine], hierarchy.parents)
    expected = [0.4 * 0.2 * 0.9, 0.1 * 0.2 * 0.9, 0.2 * 0.5 * 0.9, 0.3 * 0.3 * 0.1]
    assert scores[0].tolist() == pytest.approx(expected)

    out = hierarchy.decode([p_coarse, p_middle, p_fine], top_k=3)
    # The fine head alone picks cell 0, the hierarchy picks cell 2 (its middle and coarse parents are likelier).
    assert out.argmax[2].item() == 0 and out.hierarchy_argmax.item() == 2
    assert out.argmax[0].item() == 0 and out.argmax[1].item() == 1
    assert out.hierarchy[0].sum().item() == pytest.approx(1.0)
    assert out.hierarchy[0].tolist() == pytest.approx([e / sum(expected) for e in expected])
    assert out.top_indices[3][0].tolist() == [2, 0, 1]
    assert out.top_indices[0][0].tolist() == [0, 1]  # k is capped at the partitioning's size


def test_batched_rows_are_independent(nested):
    hierarchy = Hierarchy(list(nested))
    rng = np.random.default_rng(0)
    probs = [torch.from_numpy(rng.dirichlet(np.ones(n), size=4)).float() for n in (2, 3, 4)]
    together = hierarchy.decode(probs).hierarchy
    for row in range(4):
        alone = hierarchy.decode([p[row:row + 1] for p in probs]).hierarchy
        assert torch.allclose(alone[0], together[row])


def test_confidence_is_mass_within_25_km_of_the_estimate():
    tokens_lat_lon = [("47e66e20858771d3", 48.8569, 2.3412),  # Paris
                      ("47e66f", 48.90, 2.45),  # about 9 km away
                      ("487604cfba8aa333", 51.5074, -0.1278)]  # London, 340 km away
    fine = _partitioning("fine", *map(list, zip(*tokens_lat_lon)))
    hierarchy = Hierarchy([fine])
    out = hierarchy.decode([torch.tensor([[0.5, 0.2, 0.3], [0.1, 0.1, 0.8]])])
    assert out.hierarchy_argmax.tolist() == [0, 2]
    assert out.confidence.tolist() == pytest.approx([0.7, 0.8])


def test_underflowing_product_falls_back_to_the_fine_head(nested):
    hierarchy = Hierarchy(list(nested))
    out = hierarchy.decode([torch.tensor([[0.0, 1.0]]), torch.tensor([[1.0, 0.0, 0.0]]),
                            torch.tensor([[0.1, 0.6, 0.2, 0.1]])])
    assert out.hierarchy_argmax.item() == 1
    assert torch.isfinite(out.hierarchy).all()


# --- the paper's partitionings -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def paper_partitionings():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "geoestimation"
    if not root.is_dir():
        pytest.skip("shared reference data not present")
    return [Partitioning.from_csv(root / f"cells_50_{t}.csv", name=n)
            for t, n in ((5000, "coarse"), (2000, "middle"), (1000, "fine"))]


def test_points_fall_in_their_cells_including_the_level_30_ones(paper_partitionings):
    coarse, middle, fine = paper_partitionings
    assert [len(p) for p in paper_partitionings] == [3298, 7202, 12893]
    for token in ("47e66e20858771d3", "487604cfba8aa333", "12a4a2f6ad1e0fc9"):
        index = fine.index_of(token)
        assert fine.levels[index] == 30
        assert fine.class_of(fine.lat[index], fine.lon[index]) == index
    paris = fine.index_of("47e66e20858771d3")
    assert fine.lat[paris] == pytest.approx(48.8569, abs=1e-3) and fine.lon[paris] == pytest.approx(2.3412, abs=1e-3)
    # Every cell's mean coordinate lies inside the cell itself.
    sample = np.arange(0, len(middle), 97)
    assert middle.classes_of(middle.lat[sample], middle.lon[sample]).tolist() == sample.tolist()
    eiffel = fine.class_of(48.8584, 2.2945)
    assert fine.tokens[eiffel] == "47e66fe1f3" and fine.levels[eiffel] == 18
    assert fine.class_of(-50.0, -130.0) is None  # southern Pacific: no photos, no cell


def test_parent_matrix_equals_the_derived_table_for_all_fine_cells(paper_partitionings, shared_data):
    matrix = parent_matrix(paper_partitionings)
    with open(shared_data / "geoestimation/derived/cell_hierarchy_fine_to_middle_coarse.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 12893 == len(matrix)
    expected = np.array([[int(r["coarse_class"]), int(r["middle_class"]), int(r["fine_class"])] for r in rows])
    assert np.array_equal(matrix, expected)
    assert {r["fine_hex_id"] for r in rows} == set(paper_partitionings[2].tokens)

"""Building partitionings: the paper's algorithm, checked against a plain reference and on a real MP-16 sample."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import s2sphere
from django.core.management import CommandError, call_command

from predictor.ml.partitions import Partitioning, parent_matrix
from predictor.ml.train import cells


def reference_partitioning(lats, lons, *, tau_min, tau_max, min_level=2, max_level=30):
    """The algorithm as the paper's script states it, one image at a time: {token: (count, mean lat, mean lon)}."""
    leaves = [s2sphere.CellId.from_lat_lng(s2sphere.LatLng.from_degrees(a, b)) for a, b in zip(lats, lons)]
    cell_of = {i: leaf.parent(min_level) for i, leaf in enumerate(leaves)}
    sizes = Counter(cell_of.values())
    cell_of = {i: c for i, c in cell_of.items() if sizes[c] > tau_min}
    level = min_level
    while True:
        sizes = Counter(cell_of.values())
        if level >= max_level or all(n <= tau_max for n in sizes.values()):
            break
        level += 1
        for i, c in list(cell_of.items()):
            if sizes[c] > tau_max:
                cell_of[i] = leaves[i].parent(level)
    sizes = Counter(cell_of.values())
    members: dict[str, list[int]] = {}
    for i, c in cell_of.items():
        if sizes[c] > tau_min:
            members.setdefault(c.to_token(), []).append(i)
    return {token: (len(ix), sum(lats[i] for i in ix) / len(ix), sum(lons[i] for i in ix) / len(ix))
            for token, ix in members.items()}


def synthetic_points(seed=0):
    rng = np.random.default_rng(seed)
    groups = [
        (rng.normal(48.8566, 0.02, 500), rng.normal(2.3522, 0.03, 500)),  # a dense city
        (rng.normal(40.7, 1.5, 300), rng.normal(-74.0, 1.5, 300)),  # a region
        (np.degrees(np.arcsin(rng.uniform(-1, 1, 250))), rng.uniform(-180, 180, 250)),  # the whole globe
        (np.full(60, 41.38879), np.full(60, 2.15899)),  # one spot photographed 60 times: cannot be split
        (rng.normal(-33.86, 0.001, 12), rng.normal(151.21, 0.001, 12)),  # a small group
    ]
    lats = np.concatenate([g[0] for g in groups]).clip(-90, 90)
    lons = ((np.concatenate([g[1] for g in groups]) + 180) % 360) - 180
    return lats, lons


def as_dict(partitioning: Partitioning):
    return {t: (int(n), a, b) for t, n, a, b in
            zip(partitioning.tokens, partitioning.counts, partitioning.lat, partitioning.lon)}


def assert_same(built: Partitioning, reference: dict):
    got = as_dict(built)
    assert set(got) == set(reference)
    for token, (count, lat, lon) in reference.items():
        assert got[token][0] == count
        assert got[token][1:] == pytest.approx((lat, lon), abs=1e-9)


def test_parent_ids_by_bit_arithmetic_equal_s2sphere():
    lats, lons = synthetic_points(seed=1)
    leaves = cells.leaf_cell_ids(lats[::25], lons[::25])
    for leaf in leaves:
        cell = s2sphere.CellId(int(leaf))
        assert cell.is_leaf()
        for level in range(0, 31):
            parent = int(cells.parent_ids(np.array([leaf], dtype=np.uint64), level)[0])
            assert parent == cell.parent(level).id()
            assert cells.cell_token(parent) == cell.parent(level).to_token()


@pytest.mark.parametrize(("tau_min", "tau_max", "max_level"), [(3, 40, 30), (0, 100, 30), (5, 25, 9)])
def test_build_equals_the_plain_reference(tau_min, tau_max, max_level):
    lats, lons = synthetic_points()
    built = cells.build_partitioning(lats, lons, tau_min=tau_min, tau_max=tau_max, max_level=max_level,
                                     name="synthetic")
    assert_same(built, reference_partitioning(lats, lons, tau_min=tau_min, tau_max=tau_max, max_level=max_level))
    assert built.num_images == len(lats)
    assert (built.counts > tau_min).all()
    over = built.counts > tau_max
    assert (built.levels[over] == max_level).all()


def test_identical_coordinates_end_in_one_unsplittable_level_30_cell():
    lats, lons = synthetic_points()
    built = cells.build_partitioning(lats, lons, tau_min=3, tau_max=40, name="synthetic")
    index = built.class_of(41.38879, 2.15899)
    assert built.levels[index] == 30 and built.counts[index] == 60


def test_classes_follow_cell_id_order_whatever_the_input_order():
    lats, lons = synthetic_points()
    built = cells.build_partitioning(lats, lons, tau_min=3, tau_max=40, name="a")
    order = np.random.default_rng(7).permutation(len(lats))
    shuffled = cells.build_partitioning(lats[order], lons[order], tau_min=3, tau_max=40, name="b")
    assert shuffled.tokens == built.tokens
    ids = [s2sphere.CellId.from_token(t).id() for t in built.tokens]
    assert ids == sorted(ids)
    assert np.allclose(shuffled.lat, built.lat) and np.array_equal(shuffled.counts, built.counts)


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="tau_min < tau_max"):
        cells.build_partitioning([0.0], [0.0], tau_min=10, tau_max=10, name="x")
    with pytest.raises(ValueError, match=r"\[-90, 90\]"):
        cells.build_partitioning([91.0], [0.0], tau_min=0, tau_max=10, name="x")
    with pytest.raises(ValueError, match="decrease"):
        cells.build_hierarchy([0.0], [0.0], tau_min=0, tau_maxes=[10, 20, 5])


def test_real_mp16_sample_with_paper_taus_scaled(shared_data):
    """100k MP-16 coordinates, tau scaled by 100k / 4.72M: figures recorded in docs/partitions.md."""
    lats, lons = cells.read_coordinates(shared_data / "mp16-coordinates" / "coordinates_100K.csv")
    tau_min, tau_maxes = cells.paper_scaled_taus(len(lats))
    assert (tau_min, tau_maxes) == (1, (106, 42, 21))
    partitionings = cells.build_hierarchy(lats, lons, tau_min=tau_min, tau_maxes=tau_maxes)
    for partitioning, tau_max in zip(partitionings, tau_maxes):
        summary = cells.partitioning_summary(partitioning, tau_max=tau_max)
        print(summary)
        assert (partitioning.counts > tau_min).all()
        over = partitioning.counts > tau_max
        assert (partitioning.levels[over] == 30).all(), "only level-30 cells may exceed tau_max"
    assert [len(p) for p in partitionings] == [3137, 6752, 11739]
    assert [int(p.levels.max()) for p in partitionings] == [15, 17, 30]
    # Every cell's mean coordinate lies inside the cell, as in the paper's files, so class_of finds it.
    fine = partitionings[-1]
    assert all(fine.class_of(a, b) == i for i, (a, b) in enumerate(zip(fine.lat, fine.lon)))
    matrix = parent_matrix(partitionings)
    assert matrix.shape == (11739, 3) and (matrix >= 0).all()
    for p in range(2):  # every coarse and middle cell is the parent of some fine cell
        assert len(np.unique(matrix[:, p])) == len(partitionings[p])


def test_build_partitions_command_single_and_hierarchy(shared_data, tmp_path, capsys):
    coords = tmp_path / "coords.csv"
    lats, lons = synthetic_points()
    coords.write_text("id,latitude,longitude\n" + "".join(f"{i},{a},{b}\n" for i, (a, b) in
                                                         enumerate(zip(lats, lons))))
    out = tmp_path / "cells.csv"
    call_command("build_partitions", "--coords", str(coords), "--lat-col", "latitude", "--lon-col", "longitude",
                 "--tau-min", "3", "--tau-max", "40", "--out", str(out))
    assert_same(Partitioning.from_csv(out), reference_partitioning(lats, lons, tau_min=3, tau_max=40))
    assert "unsplittable level-30 cell" in capsys.readouterr().out

    call_command("build_partitions", "--coords", str(coords), "--lat-col", "latitude", "--lon-col", "longitude",
                 "--hierarchy", "--tau-min", "3", "--tau-max", "120", "60", "30", "--out-dir", str(tmp_path / "h"))
    built = [Partitioning.from_csv(tmp_path / "h" / f"cells_3_{t}.csv") for t in (120, 60, 30)]
    assert len(built[0]) < len(built[1]) < len(built[2])
    assert parent_matrix(built).shape == (len(built[2]), 3)

    # Column names in any case, as preprocess_images reads them; nothing is written without --out / --out-dir.
    coords.write_text("id,Latitude,LNG\n" + "".join(f"{i},{a},{b}\n" for i, (a, b) in enumerate(zip(lats, lons))))
    call_command("build_partitions", "--coords", str(coords), "--tau-min", "3", "--tau-max", "40",
                 "--out", str(tmp_path / "any-case.csv"))
    assert_same(Partitioning.from_csv(tmp_path / "any-case.csv"), reference_partitioning(lats, lons, tau_min=3,
                                                                                         tau_max=40))
    with pytest.raises(CommandError, match="say where to write the partitioning: --out"):
        call_command("build_partitions", "--coords", str(coords), "--tau-min", "3", "--tau-max", "40")
    with pytest.raises(CommandError, match="--out-dir DIR"):
        call_command("build_partitions", "--coords", str(coords), "--hierarchy")
    with pytest.raises(CommandError, match="no column y in the header"):
        call_command("build_partitions", "--coords", str(coords), "--lat-col", "y", "--tau-min", "3",
                     "--tau-max", "40", "--out", str(tmp_path / "never.csv"))
    assert not (tmp_path / "never.csv").exists()
    # Bad rows are counted and left out, never fatal; a file with no good row at all is refused.
    capsys.readouterr()
    coords.write_text("LAT,LON\n10,20\n10,abc\n91,5\n11,21\n")
    call_command("build_partitions", "--coords", str(coords), "--tau-min", "1", "--tau-max", "40",
                 "--out", str(tmp_path / "two.csv"))
    printed = capsys.readouterr().out
    assert "2 coordinates from" in printed
    assert "skipped 2 bad rows: line 3: not a coordinate pair" in printed and "line 4: coordinates out of range" in printed
    assert sum(Partitioning.from_csv(tmp_path / "two.csv").counts) == 2
    coords.write_text("LAT,LON\n10,abc\n")
    with pytest.raises(CommandError, match="no coordinates"):
        call_command("build_partitions", "--coords", str(coords), "--tau-min", "3", "--tau-max", "40",
                     "--out", str(tmp_path / "none.csv"))
    with pytest.raises(ValueError, match=r":2: not a coordinate pair"):
        cells.read_coordinates(coords)

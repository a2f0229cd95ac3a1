"""Round scoring: the GeoGuessr-compatible curve and the great-circle error it is computed from."""
import math

import pytest

from games import scoring


@pytest.mark.parametrize("distance_km, points", [
    (0.0, 5000), (0.025, 5000), (1, 4997), (25, 4917), (100, 4676), (1000, 2558), (2500, 936), (5000, 175),
    (10000, 6), (20037, 0)])
def test_score_matches_the_published_check_values(distance_km, points):
    assert scoring.score(distance_km) == points


def test_score_just_beyond_25_metres_is_no_longer_perfect():
    assert scoring.score(0.026) == 5000  # rounds to 5000 too: 5000*exp(-0.0000174)
    assert scoring.score(0.2) == 4999


def test_score_never_increases_with_distance():
    values = [scoring.score(d) for d in range(0, 20000, 37)]
    assert values == sorted(values, reverse=True)


@pytest.mark.parametrize("bad", [-1.0, float("nan")])
def test_score_refuses_impossible_distances(bad):
    with pytest.raises(ValueError):
        scoring.score(bad)


def test_error_km_is_the_great_circle_distance():
    # Paris to New York is about 5,837 km; antipodes are half the circumference apart.
    assert scoring.error_km(true_lat=48.8566, true_lon=2.3522, lat=40.7128, lon=-74.0060) == pytest.approx(5837, abs=5)
    assert scoring.error_km(true_lat=0, true_lon=0, lat=0, lon=180) == pytest.approx(math.pi * 6371, rel=1e-9)
    assert scoring.error_km(true_lat=10, true_lon=179.9, lat=10, lon=-179.9) < 25


@pytest.mark.parametrize("lat, lon, ok", [(0, 0, True), (90, 180, True), (-90, -180, True), (90.1, 0, False),
                                          (0, 181, False), (float("nan"), 0, False), (True, 0, False)])
def test_valid_coordinate(lat, lon, ok):
    assert scoring.valid_coordinate(lat, lon) is ok


@pytest.mark.parametrize("name, kind", [
    ("CC-BY 2.0", "open"), ("CC BY 2.0", "open"), ("cc by-sa 4.0", "open"), ("CC0 1.0", "open"),
    ("Public Domain Mark", "open"), ("Public Domain Dedication (CC0)", "open"),
    ("No known copyright restrictions", "open"), ("United States Government Work", "open"),
    ("CC-BY-NC-SA 2.0", "nc"), ("CC BY-NC 2.0", "nc"), ("Attribution-NonCommercial License", "nc"),
    ("CC BY-NC-ND 2.0", "nd"), ("CC-BY-ND 2.0", "nd"),
    ("All Rights Reserved", "arr"), ("", "unknown"), (None, "unknown"), ("some licence", "unknown")])
def test_the_licence_policy_classes(name, kind):
    from games.licences import is_open_licence, licence_kind, needs_reason

    assert licence_kind(name) == kind
    assert is_open_licence(name) is (kind == "open")
    # NC is playable unless the site is commercial; ND, All Rights Reserved and unknown always need a reason.
    assert needs_reason(kind, commercial=False) is (kind not in ("open", "nc"))
    assert needs_reason(kind, commercial=True) is (kind != "open")


def test_every_flickr_licence_id_has_its_class():
    from games.licences import FLICKR_LICENCES, licence_kind

    kinds = {number: licence_kind(licence.name) for number, licence in FLICKR_LICENCES.items()}
    assert kinds == {0: "arr", 1: "nc", 2: "nc", 3: "nd", 4: "open", 5: "open", 6: "nd", 7: "open", 8: "open",
                     9: "open", 10: "open"}

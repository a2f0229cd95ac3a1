"""Round scoring: GeoGuessr-compatible points from the great-circle error, the same function for player and model."""
from __future__ import annotations

import math

from predictor.ml.geodesy import great_circle_km, valid_coordinates

MAX_SCORE = 5000
# GeoGuessr's world-map size ("maxErrorDistance"); the score falls by e every 1491.7 km.
WORLD_SIZE_KM = 14916.862
PERFECT_WITHIN_KM = 0.025


def score(distance_km: float) -> int:
    """Points for a guess `distance_km` from the truth: 5000 within 25 m, then 5000·exp(-10·d / 14916.862)."""
    if distance_km is None or math.isnan(distance_km) or distance_km < 0:
        raise ValueError(f"a distance must be a non-negative number of km, not {distance_km!r}")
    if distance_km <= PERFECT_WITHIN_KM:
        return MAX_SCORE
    return int(round(MAX_SCORE * math.exp(-10.0 * distance_km / WORLD_SIZE_KM)))


def error_km(*, true_lat: float, true_lon: float, lat: float, lon: float) -> float:
    """Great-circle distance in km between the true position and a guess."""
    return float(great_circle_km(true_lat, true_lon, lat, lon))


def valid_coordinate(lat: float, lon: float) -> bool:
    """True for a finite latitude in [-90, 90] and longitude in [-180, 180]."""
    return (isinstance(lat, (int, float)) and isinstance(lon, (int, float)) and not isinstance(lat, bool)
            and not isinstance(lon, bool) and valid_coordinates(lat, lon))

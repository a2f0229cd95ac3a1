"""How long the play page takes to draw its country outlines, cold and warm, in headless Chromium.

Starts Daphne on the embedded defaults with a throwaway data directory (migrated, the starter pack imported), opens
a game's play page and measures, from the navigation's start, when the map's outlines are drawn: the moment the map
gets its `basemap-ready` class, plus one animation frame (the canvas painted). Scenarios:

  cold-first   a server started moments ago that has never built the outlines (no disk cache), empty browser cache
  cold         a server started moments ago, outlines already built on disk (what `make run` leaves), empty
               browser cache
  warm-server  a server that has served the page before, empty browser cache (a new visitor)
  warm         a server and a browser that have both loaded the page before (the next game, a reload)

Each cold scenario restarts the server for every sample. It also counts the basemap requests a page makes.

    .venv/bin/python benchmarks/bench_basemap.py --samples 5
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
CHROMIUM = os.environ.get("GEOWEB_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run"]
# Records when the outlines are drawn, in ms since the navigation started.
DRAWN_PROBE = """
new MutationObserver(function (changes, observer) {
  var map = document.getElementById('map');
  if (map && map.classList.contains('basemap-ready')) {
    observer.disconnect();
    requestAnimationFrame(function () { window.__basemapDrawnMs = performance.now(); });
  }
}).observe(document, { attributes: true, subtree: true, attributeFilter: ['class'] });
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    def __init__(self, data_dir: Path, port: int):
        self.data_dir, self.port = data_dir, port
        self.env = dict(os.environ, GEOWEB_DATA_DIR=str(data_dir), GEOWEB_MODEL_DIR=str(data_dir / "models"),
                        GEOWEB_TILE_URL="", GEOWEB_LOG_LEVEL="WARNING", GEOWEB_RATE_GAME_START="0",
                        DJANGO_SETTINGS_MODULE="geoweb.settings")
        self.process = None

    def manage(self, *args: str) -> None:
        subprocess.run([PYTHON, "manage.py", *args], cwd=ROOT, env=self.env, check=True, stdout=subprocess.DEVNULL)

    def start(self) -> None:
        self.process = subprocess.Popen([PYTHON, "-m", "daphne", "-b", "127.0.0.1", "-p", str(self.port),
                                         "geoweb.asgi:application"], cwd=ROOT, env=self.env,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                # /healthz answers once the process serves HTTP; it touches no basemap.
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=2).read()
                return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("the server did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=30)
            self.process = None


def open_game(context, base: str) -> str:
    """A new game in this browser context; returns its play page URL."""
    page = context.new_page()
    page.goto(base + "/")
    page.click("#start-game")
    page.wait_for_url("**/play/*/")
    url = page.url
    page.close()
    return url


def drawn_ms(context, url: str) -> tuple[float, int]:
    page = context.new_page()
    requests = []
    page.on("request", lambda request: "/basemap/" in request.url and requests.append(request.url))
    page.add_init_script(DRAWN_PROBE)
    page.goto(url)
    page.wait_for_function("() => window.__basemapDrawnMs !== undefined", timeout=60_000)
    value = page.evaluate("window.__basemapDrawnMs")
    page.close()
    return value, len(requests)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=5)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    data_dir = Path(tempfile.mkdtemp(prefix="geoweb-bench-basemap-"))
    server = Server(data_dir, free_port())
    base = f"http://127.0.0.1:{server.port}"
    results: dict[str, list[float]] = {name: [] for name in ("cold-first", "cold", "warm-server", "warm")}
    request_counts = []
    try:
        server.manage("migrate", "--noinput")
        server.manage("import_game_images")
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            for sample in range(args.samples):
                for scenario in ("cold-first", "cold"):
                    if scenario == "cold-first":
                        shutil.rmtree(data_dir / "cache", ignore_errors=True)
                    server.start()
                    context = browser.new_context(viewport={"width": 1280, "height": 900})
                    url = open_game(context, base)  # the home page has no map: the basemap is not touched
                    value, count = drawn_ms(context, url)
                    results[scenario].append(value)
                    request_counts.append(count)
                    context.close()
                    if scenario == "cold":
                        context = browser.new_context(viewport={"width": 1280, "height": 900})
                        url = open_game(context, base)
                        results["warm-server"].append(drawn_ms(context, url)[0])
                        drawn_ms(context, url)
                        results["warm"].append(drawn_ms(context, url)[0])
                        context.close()
                    server.stop()
                print(f"sample {sample + 1}/{args.samples}: " + ", ".join(
                    f"{name} {values[-1]:.0f} ms" for name, values in results.items()), flush=True)
            browser.close()
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
    load = os.getloadavg()
    sizes = {level: len(gzip_size(level)) for level in ("world", "fine")}
    print(json.dumps({
        "machine": f"{platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "load_average": [round(x, 2) for x in load],
        "samples": args.samples,
        "median_ms": {name: round(statistics.median(values)) for name, values in results.items()},
        "max_ms": {name: round(max(values)) for name, values in results.items()},
        "basemap_requests_per_page": sorted(set(request_counts)),
        "gzip_bytes": sizes,
    }, indent=1))


def gzip_size(level: str) -> bytes:
    import gzip

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "geoweb.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from predictor import places

    return gzip.compress(places.basemap_level(level))


if __name__ == "__main__":
    main()

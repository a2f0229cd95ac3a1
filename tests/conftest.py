"""Shared fixtures: generated images, users, a live ASGI server and headless Chromium.

Nothing here downloads anything: images are drawn by Pillow, models are built with random weights, the browser
is Debian's Chromium at /usr/bin/chromium driven by Playwright.
"""
from __future__ import annotations

import asyncio
import contextlib
import io
import json
import multiprocessing
import os
import shutil
import signal
import time
import urllib.request
from pathlib import Path

import pytest

# ../shared beside the repository; a worktree elsewhere names it with GEOWEB_SHARED_DIR.
SHARED = Path(os.environ.get("GEOWEB_SHARED_DIR") or Path(__file__).resolve().parents[1].parent / "shared")
CHROMIUM = os.environ.get("GEOWEB_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]


def pytest_configure(config):
    # No tile server in tests: the map draws the app's own basemap only.
    os.environ.setdefault("GEOWEB_TILE_URL", "")


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items):
    # Once the session's Playwright has started, its event loop runs in the main thread, and a sync test that
    # calls an async view through Django's test client fails ("cannot use AsyncToSync ..."). So every test that
    # drives the browser runs after all the others (pytest-django's database grouping is kept within each part).
    items.sort(key=lambda item: "browser" in getattr(item, "fixturenames", ()))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The read-only reference data beside the repository (../shared/data)."""
    path = SHARED / "data"
    if not path.is_dir():
        pytest.skip("../shared/data is not present beside the repository")
    return path


@pytest.fixture(autouse=True)
def _isolated_media(settings, tmp_path):
    """Every test writes uploads, game images and bundles into its own folder."""
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.MODEL_DIR = tmp_path / "models"
    yield


@pytest.fixture(autouse=True)
def _fresh_rate_limits():
    """Rate-limit counters live in a cache (files under the data folder embedded, Redis in scale-out): each test
    starts with none, so uploads in one test do not count against the next."""
    from django.conf import settings
    from django.core.cache import caches

    for alias in settings.CACHES:
        caches[alias].clear()
    yield


@pytest.fixture(autouse=True)
def _no_playwright_loop(request):
    """Playwright's sync API (session-scoped `browser`) leaves its event loop marked as running in the main thread,
    and pytest-asyncio (or asyncio.run) then refuses to start a test's loop; every test that does not drive the
    browser gets it hidden for its length."""
    if {"browser", "page"} & set(request.fixturenames):
        yield
        return
    playwright_loop = asyncio._get_running_loop()
    asyncio._set_running_loop(None)
    yield
    asyncio._set_running_loop(playwright_loop)


@pytest.fixture
def tiny_model(tiny_bundle, settings):
    """The tiny random-weight bundle installed and active in this test's MODEL_DIR, the full answer streamed (no
    upload limits), no worker behind the test's back; the engine closed after."""
    from predictor import inference, registry, worker

    settings.EMBEDDED_WORKER = False  # this process must not run jobs behind the test's back
    # These tests are about the stream itself: the full answer, not the upload limits (tests/test_responsible_*).
    settings.UPLOAD_GRANULARITY = "fine"
    settings.UPLOAD_COARSEN_INDOOR = False
    worker.stop_embedded_worker()
    registry.install_bundle(tiny_bundle)
    yield
    inference.reset_engine()


def make_jpeg(width: int = 64, height: int = 48, colour=(200, 120, 40), **save_kwargs) -> bytes:
    """A small JPEG of one colour with a stripe, so it is not degenerate."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (width, height), colour)
    ImageDraw.Draw(image).rectangle([0, height // 3, width, height // 2], fill=(20, 60, 160))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90, **save_kwargs)
    return buffer.getvalue()


@pytest.fixture
def jpeg_bytes() -> bytes:
    return make_jpeg()


@pytest.fixture
def user(django_user_model):
    """A user who has accepted the upload terms of use (predictor.policy)."""
    from predictor import policy

    alice = django_user_model.objects.create_user(username="alice", password="a-long-test-password-1")
    policy.accept_terms(alice)
    return alice


@pytest.fixture
def other_user(django_user_model):
    return django_user_model.objects.create_user(username="bob", password="a-long-test-password-2")


@pytest.fixture(scope="session", autouse=True)
def _close_thread_connections_before_teardown(django_db_setup, django_db_blocker):
    """Before the test database is dropped, close what asgiref's thread-sensitive thread still holds.

    That one thread runs every database_sync_to_async call of the in-process websocket tests; in the PostgreSQL
    pass it could end the session holding a pooled connection, and PostgreSQL then refuses to drop the database
    ("being accessed by other users").
    """
    yield
    from asgiref.sync import SyncToAsync
    from django.db import connections

    with django_db_blocker.unblock():
        SyncToAsync.single_thread_executor.submit(connections.close_all).result(timeout=30)


# --- live server and browser -------------------------------------------------------------------------------------

def _make_application():
    # Module-level so that the forked server process can build the app itself.
    from channels.routing import get_default_application
    from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler

    return ASGIStaticFilesHandler(get_default_application())


def _forked_daphne_process_class():
    from daphne.testing import DaphneProcess

    class ForkedDaphneProcess(DaphneProcess):
        def run(self):
            # Tests that ran earlier in this process may have used asgiref's one-thread executor (every
            # database_sync_to_async call goes through it). The forked child inherits the executor but not its
            # thread, so its first sync_to_async call would wait forever: give the child a fresh one.
            from concurrent.futures import ThreadPoolExecutor

            from asgiref.sync import SyncToAsync

            SyncToAsync.single_thread_executor = ThreadPoolExecutor(max_workers=1)
            # Likewise the channel layers the parent used (Redis connections bound to the parent's event loops):
            # the child makes its own.
            from channels.layers import channel_layers

            channel_layers.backends.clear()
            super().run()

    return ForkedDaphneProcess


@pytest.fixture(scope="session")
def live_app(django_db_setup, django_db_blocker, tmp_path_factory):
    """The real ASGI app (HTTP + websockets + embedded worker) served by Daphne in a forked process.

    The child inherits the test database settings; tests that use it need `transactional_db` so that what they
    write is committed and visible to the server.
    """
    from django.conf import settings
    from django.db import connections

    _ForkedDaphneProcess = _forked_daphne_process_class()
    media = tmp_path_factory.mktemp("live-media")
    settings.MEDIA_ROOT = media
    settings.MODEL_DIR = tmp_path_factory.mktemp("live-models")
    # The live server runs its own inference worker, also in the PostgreSQL + Redis pass (where the setting's
    # default is off because `run_worker` processes do the work).
    settings.EMBEDDED_WORKER = True
    process = _ForkedDaphneProcess("127.0.0.1", _make_application)
    with django_db_blocker.unblock():
        connections.close_all()  # the child must not share the parent's database sockets
        for connection in connections.all():
            if getattr(connection, "pool", None) is not None:
                connection.close_pool()  # nor a PostgreSQL pool, whose threads would not survive the fork
        process.start()  # forked while unblocked: the server may use the test database
    if not process.ready.wait(timeout=60):
        process.terminate()
        raise RuntimeError("the live Daphne server did not start")
    url = f"http://127.0.0.1:{process.port.value}"
    yield LiveApp(url=url, media_root=media, model_dir=settings.MODEL_DIR)
    process.terminate()
    process.join(timeout=10)


class LiveApp:
    def __init__(self, *, url: str, media_root: Path, model_dir: Path):
        self.url = url
        self.media_root = media_root
        self.model_dir = model_dir


@pytest.fixture
def live_settings(live_app, settings):
    """Point this test's settings at the live server's folders, so files written here are seen there."""
    settings.MEDIA_ROOT = live_app.media_root
    settings.MODEL_DIR = live_app.model_dir
    return live_app


@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        pytest.fail(f"Chromium is not installed at {CHROMIUM}: run `make chromium`")
    from playwright.sync_api import sync_playwright

    # From here on Playwright's event loop runs in the main thread, where the browser tests (which run last) make
    # their ORM calls; Django's guard against ORM calls on an event loop is switched off for them only.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            instance = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            yield instance
            instance.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    tab = context.new_page()
    tab.set_default_timeout(15_000)
    errors: list[str] = []
    tab.on("pageerror", lambda error: errors.append(str(error)))
    tab.js_errors = errors
    yield tab
    context.close()


def photo_with_gps() -> bytes:
    """A 640 x 480 JPEG with EXIF GPS (Paris), as a phone would upload it."""
    from PIL import Image

    image = Image.new("RGB", (640, 480), (90, 140, 200))
    image.paste((40, 120, 40), (0, 300, 640, 480))
    exif = Image.Exif()
    exif[0x8825] = {1: "N", 2: (48.0, 51.0, 29.0), 3: "E", 4: (2.0, 17.0, 40.0)}
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif.tobytes())
    return buffer.getvalue()


def wait_for_result(page):
    page.wait_for_selector("#analysis-root[data-stage=done]", timeout=60_000)
    assert page.is_visible("#scene") and page.is_visible("#estimate")
    assert page.locator("#s3-bars .bar-row").count() == 3
    assert page.locator("#places365 li").count() == 5
    return {
        "cells": page.locator("path.heat-cell").count(),
        "estimate": page.inner_text("#estimate-label"),
        "candidates": page.locator("#candidates li").all_inner_texts(),
        "s3": page.locator("#s3-bars").inner_text(),
    }


def browser_login(page, base_url: str, username: str, password: str):
    page.goto(f"{base_url}/accounts/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")


@contextlib.contextmanager
def live_worker_paused(base: str):
    """Hold the live server's embedded worker (SIGSTOP) so that the page is open before the analysis runs."""
    def status():
        with urllib.request.urlopen(base + "/healthz", timeout=20) as response:
            return json.loads(response.read())["embedded_worker"] or {}

    deadline = time.monotonic() + 90
    while not status().get("ready") and time.monotonic() < deadline:
        time.sleep(0.2)
    pid = status()["pid"]
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def analysed_beside_live_server(live, user, bundle, photo: bytes, settings, **limits):
    """An upload analysed by this test process with the model `bundle` and the upload limits `limits` (settings
    names), while the live server's own worker is held; the live server then shows it from the database, as it
    shows any finished analysis. So a browser test can see an answer the live server's own settings would not give."""
    from concurrent.futures import ThreadPoolExecutor

    from django.db import connections

    from predictor import inference, registry, services
    from predictor.models import Analysis

    for name, value in {"UPLOAD_COARSEN_INDOOR": False, "UPLOAD_FACE_DETECTION": False, **limits}.items():
        setattr(settings, name, value)
    inference.reset_engine()
    registry.install_bundle(bundle, replace=True)

    def run():  # in a thread of its own: Playwright's event loop runs in this one, and events are published
        try:
            analysis = services.create_analysis(owner=user, data=photo)
            services.run_analyses(analyses=services.claim_analyses(worker_id="browser-test", limit=1))
            return analysis
        finally:
            connections.close_all()

    try:
        with live_worker_paused(live.url), ThreadPoolExecutor(1) as pool:
            analysis = pool.submit(run).result(timeout=120)
    finally:
        inference.reset_engine()
    return Analysis.objects.get(pk=analysis.pk)


multiprocessing.set_start_method("fork", force=True)


# --- model bundles (helper MODEL) ----------------------------------------------------------------------------------

# The geoclip wheel is read, never installed: `make geoclip-wheel` puts it at .cache/geoclip/ (or set
# GEOWEB_GEOCLIP_WHEEL).
GEOCLIP_WHEEL = Path(os.environ.get("GEOWEB_GEOCLIP_WHEEL")
                     or Path(__file__).resolve().parents[1] / ".cache/geoclip/geoclip-1.3.0-py3-none-any.whl")


@pytest.fixture(scope="session")
def geoclip_wheel() -> Path:
    if not GEOCLIP_WHEEL.is_file():
        pytest.fail(f"GeoCLIP wheel not found at {GEOCLIP_WHEEL}: run `make geoclip-wheel` (pip download --no-deps "
                    "geoclip==1.3.0) or set GEOWEB_GEOCLIP_WHEEL")
    return GEOCLIP_WHEEL


@pytest.fixture(scope="session")
def tiny_geoclip(tmp_path_factory, geoclip_wheel) -> Path:
    """A GeoCLIP bundle with the wheel's real location encoder and gallery (every 200th point) and a tiny random
    CLIP tower (predictor.ml.geoclip.make_tiny_geoclip_bundle)."""
    from predictor.ml.geoclip import make_tiny_geoclip_bundle

    return make_tiny_geoclip_bundle(tmp_path_factory.mktemp("geoclip") / "geoclip-tiny", wheel=geoclip_wheel)


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:
    """A tiny random-weight ISN bundle built once per session (untrained; tiny backbone, small partitionings)."""
    from predictor.ml.isn import make_tiny_bundle

    return make_tiny_bundle(tmp_path_factory.mktemp("bundles") / "tiny-untrained")


@pytest.fixture(scope="session")
def tiny_trained_bundle(tmp_path_factory) -> Path:
    """The tiny bundle labelled trained: for flows where the model must be a game opponent (an untrained bundle
    never is). Its answers are as random as the untrained one's."""
    from predictor.ml.isn import make_tiny_bundle

    return make_tiny_bundle(tmp_path_factory.mktemp("bundles") / "tiny-trained", name="tiny-trained",
                            untrained=False)

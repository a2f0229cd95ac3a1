"""Fetching the photos of a URL list (TIB's headerless `mp16_urls.csv` / `yfcc25600_urls.csv`, or a CSV with a
header naming id, url and optionally lat/lon, author and licence) into a folder preprocess_images reads.

- bounded concurrency (a fixed pool of threads) and a request rate per host;
- retries with exponential backoff for timeouts, dropped connections, cut-off bodies, HTTP 429 and 5xx;
- resume: every outcome is appended to `downloads.csv` as it happens, and a new run skips what is settled;
- Flickr size variants (`_z` = 640 px on the long side, the size TIB trained with);
- each photo passes the caller's `clean` function (the app's image door) before it is written, so what lands in
  the folder is a re-encoded, metadata-free JPEG, or nothing.

Outcomes: fetched; missing (HTTP 404/410, or Flickr's "photo unavailable" placeholder); refused (any other 4xx, a
body that is not an accepted image, too large); corrupt (a body cut off on every try, an image that does not
decode); failed (the server or network kept failing: retried by the next run).
"""
from __future__ import annotations

import csv
import http.client
import os
import random
import re
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

from predictor.ml.train.datasets import AUTHOR_COLUMNS, ID_COLUMNS, LAT_COLUMNS, LON_COLUMNS, URL_COLUMNS

RECORD_FILE = "downloads.csv"
METADATA_FILE = "metadata.csv"
IMAGES_DIR = "images"
RECORD_COLUMNS = ["id", "status", "url", "fetched_url", "file", "bytes", "width", "height", "license", "author",
                  "lat", "lon", "detail", "seconds"]
STATUSES = ("fetched", "missing", "refused", "corrupt", "failed")
SETTLED = ("fetched", "missing", "refused", "corrupt")  # a new run skips these; "failed" is tried again
LICENSE_COLUMNS = ("license", "licence", "license_id", "license_name", "licence_name", "rights")
# Flickr licence ids (flickr.photos.licenses.getInfo), as the Im2GPS files and TIB's demo use them.
FLICKR_LICENSES = {"0": "All Rights Reserved", "1": "CC BY-NC-SA 2.0", "2": "CC BY-NC 2.0", "3": "CC BY-NC-ND 2.0",
                   "4": "CC BY 2.0", "5": "CC BY-SA 2.0", "6": "CC BY-ND 2.0", "7": "No known copyright restrictions",
                   "8": "United States Government Work", "9": "CC0 1.0", "10": "Public Domain Mark 1.0"}
# Flickr's size suffixes that share the photo's secret (o, and h/k of newer photos, need another secret).
FLICKR_SIZES = {"s": "75 px square", "q": "150 px square", "t": "100 px", "m": "240 px", "n": "320 px",
                "w": "400 px", "z": "640 px", "c": "800 px", "b": "1024 px"}
FLICKR_HOST = re.compile(r"(^|\.)(static\.?flickr\.com|staticflickr\.com)$")
FLICKR_FILE = re.compile(r"^(\d+_[0-9a-f]+)(?:_[a-z0-9])?\.(jpg|jpeg|png|gif)$", re.IGNORECASE)
RETRY_STATUSES = {408, 425, 429, 500, 502, 503, 504}
MISSING_STATUSES = {404, 410}
MAX_REDIRECTS = 5
CHUNK = 64 * 1024


class ImageRefused(Exception):
    """Raised by a `clean` function: `kind` is "refused" (not an accepted image, too large) or "corrupt"."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


@dataclass
class CleanPhoto:
    jpeg: bytes
    width: int
    height: int


@dataclass
class UrlRow:
    id: str
    url: str
    lat: str = ""
    lon: str = ""
    author: str = ""
    license: str = ""


@dataclass
class DownloadOptions:
    workers: int = 16  # requests in flight at once
    per_host: float = 10.0  # requests per second to any one host (0 = no limit)
    retries: int = 3  # further tries after the first, for transient failures
    backoff: float = 1.0  # seconds before the first retry; doubled each time, with jitter
    timeout: float = 20.0  # seconds a connection may stay silent
    max_seconds: float = 120.0  # seconds one download may take in all
    max_bytes: int = 20 * 1024 * 1024
    size_suffix: str | None = None  # a Flickr size variant, e.g. "z"
    user_agent: str = "GeoWeb-download_images/1 (research; +https://github.com/)"


@dataclass
class DownloadReport:
    listed: int = 0
    bad_rows: int = 0
    already: int = 0  # settled by an earlier run, skipped
    left: int = 0  # not tried this time (--limit)
    counts: dict[str, int] = field(default_factory=lambda: {s: 0 for s in STATUSES})
    examples: list[str] = field(default_factory=list)
    interrupted: bool = False

    def note(self, message: str) -> None:
        if len(self.examples) < 10:
            self.examples.append(message)

    def summary(self) -> str:
        counts = ", ".join(f"{self.counts[s]} {s}" for s in STATUSES)
        return (f"{self.listed} listed: {counts}" + (f", {self.already} done by an earlier run" if self.already else "")
                + (f", {self.left} left for a later run (--limit)" if self.left else "")
                + (f"; {self.bad_rows} bad rows skipped" if self.bad_rows else ""))


# --- the URL list ------------------------------------------------------------------------------------------------

def _column(header: list[str], candidates: tuple[str, ...]) -> int | None:
    lowered = [h.strip().lower() for h in header]
    for candidate in candidates:
        if candidate in lowered:
            return lowered.index(candidate)
    return None


def license_text(value: str) -> str:
    value = (value or "").strip()
    return f"{value} ({FLICKR_LICENSES[value]})" if value in FLICKR_LICENSES else value


def safe_relative(image_id: str) -> str | None:
    """The id as a relative file path inside the output folder, or None when it would leave it."""
    text = image_id.strip()
    if not text or any(c in text for c in ("\x00", "\\", ":")) or text.startswith("/"):
        return None
    parts = PurePosixPath(text).parts
    if any(part in ("..", ".") for part in parts):
        return None
    name = str(PurePosixPath(*parts))
    return name if name.lower().endswith((".jpg", ".jpeg")) else name + ".jpg"


def read_url_list(path: str | Path, report: DownloadReport) -> list[UrlRow]:
    """Rows of a URL list: headerless `id,url` (TIB's files) or a CSV whose header names the columns."""
    rows, seen = [], set()
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        first = next(reader, None)
        if first is None:
            return []
        header = [h.strip().lower() for h in first]
        id_at, url_at = _column(header, ID_COLUMNS), _column(header, URL_COLUMNS)
        has_header = id_at is not None and url_at is not None
        if not has_header:
            if len(first) < 2 or not first[1].strip().lower().startswith(("http://", "https://")):
                raise ValueError(f"{path}: expected a header naming the id and url columns, or TIB's headerless "
                                 f"'image_id,url' rows; the first row is {first[:4]}")
            id_at, url_at = 0, 1
        extra = {name: _column(header, names) if has_header else None for name, names in
                 (("lat", LAT_COLUMNS), ("lon", LON_COLUMNS), ("author", AUTHOR_COLUMNS),
                  ("license", LICENSE_COLUMNS))}
        lines = reader if has_header else [first, *reader]
        for number, row in enumerate(lines, start=2 if has_header else 1):
            report.listed += 1
            try:
                image_id, url = row[id_at].strip(), row[url_at].strip()
            except IndexError:
                report.bad_rows += 1
                report.note(f"line {number}: too few columns")
                continue
            scheme = urlsplit(url).scheme.lower()
            if not image_id or scheme not in ("http", "https") or safe_relative(image_id) is None:
                report.bad_rows += 1
                report.note(f"line {number}: " + ("not an http(s) URL" if scheme not in ("http", "https")
                                                  else f"id {image_id!r} is not a safe file name"))
                continue
            if image_id in seen or safe_relative(image_id) in seen:
                report.bad_rows += 1
                report.note(f"line {number}: id {image_id} repeats (or names the same file as another)")
                continue
            seen.update((image_id, safe_relative(image_id)))
            values = {name: (row[at].strip() if at is not None and at < len(row) else "")
                      for name, at in extra.items()}
            rows.append(UrlRow(image_id, url, **values))
    return rows


def flickr_variant(url: str, suffix: str | None) -> str | None:
    """The URL of a Flickr static photo at another size (`..._<secret>_z.jpg`), or None for other URLs."""
    if not suffix:
        return None
    parts = urlsplit(url)
    if not FLICKR_HOST.search(parts.hostname or ""):
        return None
    folder, _, name = parts.path.rpartition("/")
    match = FLICKR_FILE.match(name)
    if not match:
        return None
    return parts._replace(path=f"{folder}/{match.group(1)}_{suffix}.jpg").geturl()


# --- fetching ----------------------------------------------------------------------------------------------------

class HostPacer:
    """Spaces requests to each host at least 1/rate seconds apart, over all threads."""

    def __init__(self, per_second: float):
        self.interval = 1.0 / per_second if per_second > 0 else 0.0
        self._next: dict[str, float] = {}
        self._lock = threading.Lock()

    def wait(self, host: str) -> None:
        if not self.interval:
            return
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next.get(host, now))
            self._next[host] = slot + self.interval
        if slot > now:
            time.sleep(slot - now)


class _Redirects(urllib.request.HTTPRedirectHandler):
    """Follows a few redirects, to http(s) only (a URL list must not reach local files through a redirect)."""

    max_redirections = MAX_REDIRECTS

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if urlsplit(newurl).scheme.lower() not in ("http", "https"):
            raise urllib.error.HTTPError(newurl, 403, "redirect to a non-http URL refused", headers, fp)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


class _Transient(Exception):
    def __init__(self, message: str, *, kind: str = "failed", retry_after: float | None = None):
        super().__init__(message)
        self.kind = kind  # the outcome if every try ends like this: failed, or corrupt for cut-off bodies
        self.retry_after = retry_after


class _Final(Exception):
    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


def _retry_after(headers) -> float | None:
    value = (headers or {}).get("Retry-After") if headers is not None else None
    try:
        return min(60.0, max(0.0, float(value))) if value is not None else None
    except ValueError:
        return None


class Fetcher:
    """One GET with the limits of `DownloadOptions`; raises _Final or _Transient, returns (bytes, final URL)."""

    def __init__(self, options: DownloadOptions):
        self.options = options
        self.pacer = HostPacer(options.per_host)
        self.opener = urllib.request.build_opener(_Redirects())

    def get(self, url: str) -> tuple[bytes, str]:
        self.pacer.wait(urlsplit(url).hostname or "")
        request = urllib.request.Request(url, headers={"User-Agent": self.options.user_agent})
        started = time.monotonic()
        try:
            with self.opener.open(request, timeout=self.options.timeout) as response:
                final = response.geturl()
                if "photo_unavailable" in urlsplit(final).path:
                    raise _Final("missing", "Flickr answers with its 'photo unavailable' placeholder")
                declared = response.headers.get("Content-Length")
                if declared and declared.isdigit() and int(declared) > self.options.max_bytes:
                    raise _Final("refused", f"{int(declared)} bytes, more than {self.options.max_bytes}")
                chunks, size = [], 0
                while True:
                    chunk = response.read(CHUNK)
                    if not chunk:
                        break
                    size += len(chunk)
                    if size > self.options.max_bytes:
                        raise _Final("refused", f"more than {self.options.max_bytes} bytes")
                    if time.monotonic() - started > self.options.max_seconds:
                        raise _Transient(f"slower than {self.options.max_seconds:g} s in all")
                    chunks.append(chunk)
                body = b"".join(chunks)
                if declared and declared.isdigit() and len(body) < int(declared):
                    raise _Transient(f"body cut off at {len(body)} of {declared} bytes", kind="corrupt")
                return body, final
        except urllib.error.HTTPError as error:
            if error.code in MISSING_STATUSES:
                raise _Final("missing", f"HTTP {error.code}") from None
            if error.code in RETRY_STATUSES:
                raise _Transient(f"HTTP {error.code}", retry_after=_retry_after(error.headers)) from None
            raise _Final("refused", f"HTTP {error.code} {error.reason}") from None
        except http.client.IncompleteRead as error:
            raise _Transient(f"body cut off after {len(error.partial)} bytes", kind="corrupt") from None
        except (socket.timeout, TimeoutError):
            raise _Transient(f"no answer within {self.options.timeout:g} s") from None
        except (urllib.error.URLError, ConnectionError, http.client.HTTPException, OSError) as error:
            reason = getattr(error, "reason", error)
            if isinstance(reason, (socket.timeout, TimeoutError)):
                raise _Transient(f"no answer within {self.options.timeout:g} s") from None
            raise _Transient(f"connection failed: {reason}") from None


def _fetch_safely(row: UrlRow, fetcher: Fetcher, clean: Callable[[bytes], CleanPhoto]) -> dict:
    try:
        return fetch_one(row, fetcher, clean)
    except Exception as error:  # noqa: BLE001 - one photo's unexpected error must not end the run
        return {"id": row.id, "url": row.url, "status": "failed", "detail": f"unexpected error: {error!r}",
                "license": license_text(row.license), "author": row.author, "lat": row.lat, "lon": row.lon}


def fetch_one(row: UrlRow, fetcher: Fetcher, clean: Callable[[bytes], CleanPhoto],
              sleep: Callable[[float], None] = time.sleep) -> dict:
    """Fetch, clean and return the record of one photo (the caller writes the file)."""
    options = fetcher.options
    record = {"id": row.id, "url": row.url, "license": license_text(row.license), "author": row.author,
              "lat": row.lat, "lon": row.lon, "fetched_url": "", "detail": ""}
    started = time.monotonic()
    candidates = [u for u in (flickr_variant(row.url, options.size_suffix), row.url) if u]
    outcome, detail = "failed", ""
    for url in candidates:
        record["fetched_url"] = url
        for attempt in range(options.retries + 1):
            try:
                body, _ = fetcher.get(url)
            except _Final as error:
                outcome, detail = error.kind, str(error)
                break
            except _Transient as error:
                outcome, detail = error.kind, str(error)
                if attempt < options.retries:
                    delay = error.retry_after if error.retry_after is not None else \
                        options.backoff * (2 ** attempt) * (0.5 + random.random())
                    sleep(delay)
                continue
            try:
                photo = clean(body)
            except ImageRefused as error:
                outcome, detail = error.kind, str(error)
                break
            record.update(status="fetched", detail="", photo=photo, seconds=round(time.monotonic() - started, 3))
            return record
        # A missing size variant may still exist at the size the list gives: try that before giving up.
        if outcome != "missing":
            break
    record.update(status=outcome, detail=detail, seconds=round(time.monotonic() - started, 3))
    return record


# --- the run -----------------------------------------------------------------------------------------------------

def settled_ids(output: Path) -> dict[str, str]:
    """{id: status} of earlier runs whose outcome stands: each id's latest record, a fetched photo only while its
    file is still there, and never a failure (those are tried again)."""
    path = output / RECORD_FILE
    if not path.is_file():
        return {}
    latest: dict[str, dict] = {}
    with open(path, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            latest[row["id"]] = row
    return {image_id: row["status"] for image_id, row in latest.items() if row["status"] in SETTLED and (
        row["status"] != "fetched" or (output / IMAGES_DIR / (row.get("file") or "")).is_file())}


class _Records:
    """downloads.csv, appended and flushed per outcome, so an interrupted run loses nothing it finished."""

    def __init__(self, output: Path):
        path = output / RECORD_FILE
        new = not path.is_file() or path.stat().st_size == 0
        self._handle = open(path, "a", newline="", encoding="utf-8")
        self._writer = csv.DictWriter(self._handle, fieldnames=RECORD_COLUMNS, extrasaction="ignore")
        if new:
            self._writer.writeheader()
        self._lock = threading.Lock()

    def add(self, record: dict) -> None:
        with self._lock:
            self._writer.writerow(record)
            self._handle.flush()

    def close(self) -> None:
        self._handle.close()


def _store(output: Path, record: dict) -> None:
    photo: CleanPhoto = record.pop("photo")
    relative = safe_relative(record["id"])
    target = output / IMAGES_DIR / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = target.with_name(target.name + ".part")
    scratch.write_bytes(photo.jpeg)
    os.replace(scratch, target)  # a file under images/ is always a whole photo
    record.update(file=relative, bytes=len(photo.jpeg), width=photo.width, height=photo.height)


def write_metadata(output: Path) -> int:
    """metadata.csv (IMG_ID, AUTHOR, LAT, LON, url, license) of the fetched photos whose row gave coordinates, for
    `preprocess_images --source csv --metadata OUTPUT/metadata.csv --images OUTPUT/images`."""
    latest: dict[str, dict] = {}
    with open(output / RECORD_FILE, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            latest[row["id"]] = row
    rows = [r for r in latest.values() if r["status"] == "fetched" and r["lat"] and r["lon"]]
    if not rows:
        return 0
    with open(output / METADATA_FILE, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["IMG_ID", "AUTHOR", "LAT", "LON", "url", "license"])
        for r in rows:
            writer.writerow([r["file"], r["author"], r["lat"], r["lon"], r["url"], r["license"]])
    return len(rows)


def download(rows: Iterable[UrlRow], output: str | Path, *, clean: Callable[[bytes], CleanPhoto],
             options: DownloadOptions | None = None, report: DownloadReport | None = None,
             progress: bool = False) -> DownloadReport:
    """Fetch every row not settled by an earlier run into OUTPUT/images, recording each outcome in downloads.csv."""
    options = options or DownloadOptions()
    report = report or DownloadReport()
    output = Path(output)
    (output / IMAGES_DIR).mkdir(parents=True, exist_ok=True)
    settled = settled_ids(output)
    todo = []
    for row in rows:
        if row.id in settled:
            report.already += 1
        else:
            todo.append(row)
    fetcher = Fetcher(options)
    records = _Records(output)
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(todo), desc="download", unit="img")
    pool = ThreadPoolExecutor(max_workers=max(1, options.workers), thread_name_prefix="download")
    pending: set = set()
    queue = iter(todo)

    def finish(future) -> None:
        record = future.result()
        if record["status"] == "fetched":
            try:
                _store(output, record)
            except OSError as error:
                record.update(status="failed", detail=f"could not write the file: {error}")
                record.pop("photo", None)
        records.add(record)
        report.counts[record["status"]] += 1
        if record["status"] != "fetched":
            report.note(f"{record['id']}: {record['status']} ({record['detail']})")
        if bar is not None:
            bar.update(1)
            bar.set_postfix({s: report.counts[s] for s in STATUSES if report.counts[s]}, refresh=False)

    try:
        # A bounded window of submissions: millions of rows never sit in the pool's queue at once.
        for row in queue:
            pending.add(pool.submit(_fetch_safely, row, fetcher, clean))
            if len(pending) >= options.workers * 2:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    finish(future)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                finish(future)
    except KeyboardInterrupt:
        report.interrupted = True
        for future in pending:
            future.cancel()
        pool.shutdown(wait=True, cancel_futures=True)
        for future in pending:
            if future.done() and not future.cancelled():
                finish(future)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        records.close()
        if bar is not None:
            bar.close()
    return report

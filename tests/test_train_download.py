"""`manage.py download_images` against a local HTTP server on 127.0.0.1 that misbehaves the ways Flickr and the
network do: missing photos, refusals, slow answers, bodies cut off, things that are not images, flaky 503s."""
from __future__ import annotations

import csv
import io
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from PIL import Image

from predictor.ml.train import download
from predictor.ml.train.download import flickr_variant
from predictor.ml.train.shards import iterate_tar_samples, read_index


class Site:
    """What the server holds and how it behaves per path, and what it saw."""

    def __init__(self, photos: dict[str, bytes]):
        self.photos = photos
        self.hits: dict[str, int] = {}
        self.starts: list[tuple[float, str]] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self.lock = threading.Lock()
        self.delay = 0.0  # seconds every photo answer waits (to see concurrency)


def _handler(site: Site):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def _send(self, status: int, body: bytes, content_type: str = "image/jpeg", length: int | None = None,
                  headers: dict | None = None):
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body) if length is None else length))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()

        def do_GET(self):
            path = self.path
            with site.lock:
                site.hits[path] = site.hits.get(path, 0) + 1
                hit = site.hits[path]
                site.starts.append((time.monotonic(), path))
                site.in_flight += 1
                site.most_in_flight = max(site.most_in_flight, site.in_flight)
            try:
                self._answer(path, hit)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up on a slow answer, as it should
            finally:
                with site.lock:
                    site.in_flight -= 1

        def _answer(self, path: str, hit: int):
            path = path.split("?", 1)[0]
            name = path.rsplit("/", 1)[-1]
            if path.startswith("/photos/") and name in site.photos:
                time.sleep(site.delay)
                self._send(200, site.photos[name])
            elif path == "/missing.jpg":
                self._send(404, b"not found", "text/plain")
            elif path == "/gone.jpg":
                self._send(410, b"gone", "text/plain")
            elif path == "/forbidden.jpg":
                self._send(403, b"no", "text/plain")
            elif path == "/slow-once.jpg":
                if hit == 1:
                    time.sleep(1.5)  # longer than the client's timeout: the client gives up and tries again
                self._send(200, site.photos["a.jpg"])
            elif path == "/slow-always.jpg":
                time.sleep(1.5)
                self._send(200, site.photos["a.jpg"])
            elif path == "/flaky.jpg":
                if hit <= 2:
                    self._send(503, b"busy", "text/plain", headers={"Retry-After": "0"})
                else:
                    self._send(200, site.photos["b.jpg"])
            elif path == "/cut-off.jpg":
                body = site.photos["a.jpg"]
                self._send(200, body[:len(body) // 3], length=len(body))  # promises more than it sends
                self.close_connection = True
            elif path == "/truncated-file.jpg":
                body = site.photos["a.jpg"]
                self._send(200, body[:len(body) // 2])  # complete answer, but the JPEG itself is cut in half
            elif path == "/not-an-image.jpg":
                self._send(200, b"<html><body>Sign in to see this photo</body></html>", "text/html")
            elif path == "/to-placeholder.jpg":
                self.send_response(302)
                self.send_header("Location", "/images/photo_unavailable.png")
                self.send_header("Content-Length", "0")
                self.end_headers()
            elif path == "/images/photo_unavailable.png":
                buffer = io.BytesIO()
                Image.new("RGB", (500, 374), (200, 200, 200)).save(buffer, "PNG")
                self._send(200, buffer.getvalue(), "image/png")
            elif path == "/huge.jpg":
                self.send_response(200)
                self.send_header("Content-Type", "image/jpeg")
                self.send_header("Content-Length", str(30 * 1024 * 1024))  # more than the door takes
                self.end_headers()
                self.wfile.write(site.photos["a.jpg"][:1000])
                self.close_connection = True
            elif path == "/many-pixels.png":
                buffer = io.BytesIO()
                Image.new("L", (1500, 1000), 128).save(buffer, "PNG")  # 1.5 MP: over the limit the test sets
                self._send(200, buffer.getvalue(), "image/png")
            elif path == "/to-file.jpg":
                self.send_response(302)
                self.send_header("Location", "file:///etc/passwd")
                self.send_header("Content-Length", "0")
                self.end_headers()
            elif re.fullmatch(r"/flickr/\d+_[0-9a-f]+(_z)?\.jpg", path):
                # Flickr's static layout: 111_abc has a 640 px variant, 222_def only its default size.
                if name == "111_abcdef_z.jpg" or name == "222_abcdef.jpg":
                    self._send(200, site.photos["b.jpg"])
                else:
                    self._send(404, b"", "text/plain")
            else:
                self._send(404, b"", "text/plain")
    return Handler


@pytest.fixture()
def site(shared_data):
    photos_dir = shared_data / "im2gps3k-cc" / "photos"
    names = sorted(p.name for p in photos_dir.glob("*.jpg"))[:6]
    photos = {"a.jpg": (photos_dir / names[0]).read_bytes(), "b.jpg": (photos_dir / names[1]).read_bytes()}
    for i, name in enumerate(names):
        photos[f"p{i}.jpg"] = (photos_dir / name).read_bytes()
    state = Site(photos)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.base = f"http://127.0.0.1:{server.server_address[1]}"
    state.names = names
    yield state
    server.shutdown()
    server.server_close()


FAST = ["--timeout", "0.5", "--backoff", "0.01", "--retries", "2", "--per-host", "0", "--workers", "4"]
# For tests that count requests but have no slow answers: a 0.5 s timeout on a loaded machine would add a retry.
PATIENT = ["--timeout", "10", *FAST[2:]]


def _records(folder) -> dict[str, dict]:
    with open(folder / "downloads.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {row["id"]: row for row in rows}


def test_every_kind_of_trouble_is_counted_and_each_photo_recorded(site, tmp_path, capsys, settings):
    settings.UPLOAD_MAX_PIXELS = 1_000_000
    urls = tmp_path / "urls.csv"
    listed = [("ok-0", "/photos/p0.jpg", "4"), ("ok-1", "/photos/p1.jpg", "5"), ("missing", "/missing.jpg", "4"),
              ("gone", "/gone.jpg", ""), ("forbidden", "/forbidden.jpg", ""), ("slow-once", "/slow-once.jpg", ""),
              ("slow-always", "/slow-always.jpg", ""), ("flaky", "/flaky.jpg", ""), ("cut-off", "/cut-off.jpg", ""),
              ("truncated-file", "/truncated-file.jpg", ""), ("not-an-image", "/not-an-image.jpg", ""),
              ("placeholder", "/to-placeholder.jpg", ""), ("to-file", "/to-file.jpg", ""), ("huge", "/huge.jpg", ""),
              ("many-pixels", "/many-pixels.png", "")]
    with open(urls, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["IMG_ID", "URL", "LAT", "LON", "AUTHOR", "license"])
        for i, (image_id, path, licence) in enumerate(listed):
            writer.writerow([image_id, site.base + path, 10 + i, 20 + i, f"user{i}@N00", licence])
        writer.writerow(["../escape", site.base + "/photos/p2.jpg", 1, 2, "x", ""])  # would leave the folder
        writer.writerow(["local", "file:///etc/passwd", 1, 2, "x", ""])  # only http(s) is fetched
    out = tmp_path / "mp16"
    call_command("download_images", "--urls", str(urls), "--output", str(out), *FAST, verbosity=0)
    printed = capsys.readouterr().out
    assert "17 listed: 4 fetched, 3 missing, 5 refused, 2 corrupt, 1 failed" in printed
    assert "2 bad rows skipped" in printed

    records = _records(out)
    status = {image_id: row["status"] for image_id, row in records.items()}
    assert status == {"ok-0": "fetched", "ok-1": "fetched", "slow-once": "fetched", "flaky": "fetched",
                      "missing": "missing", "gone": "missing", "placeholder": "missing",
                      "forbidden": "refused", "not-an-image": "refused", "to-file": "refused", "huge": "refused",
                      "many-pixels": "refused",
                      "cut-off": "corrupt", "truncated-file": "corrupt", "slow-always": "failed"}
    assert site.hits["/slow-once.jpg"] == 2 and site.hits["/flaky.jpg"] == 3  # retried, then fetched
    assert site.hits["/cut-off.jpg"] == 3 and site.hits["/slow-always.jpg"] == 3  # 1 try + 2 retries
    assert site.hits["/missing.jpg"] == 1 and site.hits["/forbidden.jpg"] == 1  # final answers: no retry
    assert records["ok-0"]["url"] == site.base + "/photos/p0.jpg"
    assert records["ok-0"]["license"] == "4 (CC BY 2.0)" and records["ok-1"]["license"] == "5 (CC BY-SA 2.0)"
    assert "HTTP 404" in records["missing"]["detail"] and "cut off" in records["cut-off"]["detail"]

    # Stored photos came through the image door: whole JPEGs, no comment segment giving the place away.
    stored = (out / "images" / "ok-0.jpg").read_bytes()
    original = site.photos["p0.jpg"]
    assert b"latitude" in original and b"latitude" not in stored and b"owner" not in stored
    with Image.open(io.BytesIO(stored)) as image:
        image.load()
        assert image.format == "JPEG" and not image.getexif()
    assert not list((out / "images").rglob("*.part")) and not (tmp_path / "escape.jpg").exists()

    # metadata.csv lists the fetched photos with their coordinates, authors and licences, for preprocess_images.
    with open(out / "metadata.csv", newline="") as handle:
        metadata = {row["IMG_ID"]: row for row in csv.DictReader(handle)}
    assert set(metadata) == {"ok-0.jpg", "ok-1.jpg", "slow-once.jpg", "flaky.jpg"}
    assert metadata["ok-1.jpg"]["AUTHOR"] == "user1@N00" and metadata["ok-1.jpg"]["LAT"] == "11"

    # The next run resumes: settled photos are not asked for again, failures are retried.
    hits_before = dict(site.hits)
    call_command("download_images", "--urls", str(urls), "--output", str(out), *FAST, verbosity=0)
    printed = capsys.readouterr().out
    assert "14 done by an earlier run" in printed
    assert site.hits["/slow-always.jpg"] == hits_before["/slow-always.jpg"] + 3
    assert all(site.hits[p] == hits_before[p] for p in hits_before if p != "/slow-always.jpg")

    shards = tmp_path / "shards"
    call_command("preprocess_images", "--source", "csv", "--metadata", str(out / "metadata.csv"), "--images",
                 str(out / "images"), "--output", str(shards), verbosity=0)
    ids = {meta["id"]: meta for shard in read_index(shards / "train")["shards"]
           for _, meta in iterate_tar_samples(shards / "train" / shard["name"])}
    assert set(ids) == {"ok-0.jpg", "ok-1.jpg", "slow-once.jpg", "flaky.jpg"}
    assert ids["ok-1.jpg"]["author"] == "user1@n00"


def test_headerless_tib_list_flickr_sizes_limit_and_resume(site, tmp_path, capsys, monkeypatch):
    # The local server stands in for Flickr's static hosts.
    monkeypatch.setattr(download, "FLICKR_HOST", re.compile(r"^127\.0\.0\.1$"))
    urls = tmp_path / "mp16_urls.csv"  # TIB's layout: no header, image_id,url
    rows = [f"aa/11/111.jpg,{site.base}/flickr/111_abcdef.jpg", f"bb/22/222.jpg,{site.base}/flickr/222_abcdef.jpg"]
    rows += [f"cc/{i}/{i}.jpg,{site.base}/photos/p{i}.jpg" for i in range(2, 6)]
    urls.write_text("\n".join(rows) + "\n")
    out = tmp_path / "out"
    call_command("download_images", "--urls", str(urls), "--output", str(out), "--size-suffix", "z", "--limit",
                 "3", *PATIENT, verbosity=0)
    printed = capsys.readouterr().out
    assert "6 listed: 3 fetched, 0 missing, 0 refused, 0 corrupt, 0 failed, 3 left for a later run (--limit)" in printed
    records = _records(out)
    assert len(records) == 3
    assert records["aa/11/111.jpg"]["fetched_url"].endswith("/flickr/111_abcdef_z.jpg")
    # No 640 px variant: the size the list gives is fetched instead.
    assert records["bb/22/222.jpg"]["fetched_url"].endswith("/flickr/222_abcdef.jpg")
    assert site.hits["/flickr/222_abcdef_z.jpg"] == 1
    assert (out / "images" / "aa" / "11" / "111.jpg").is_file()
    assert not (out / "metadata.csv").exists()  # no coordinates in TIB's list: they come from its meta CSV

    (out / "images" / "aa" / "11" / "111.jpg").unlink()  # a lost file is fetched again
    call_command("download_images", "--urls", str(urls), "--output", str(out), "--size-suffix", "z", *PATIENT,
                 verbosity=0)
    printed = capsys.readouterr().out
    assert "6 listed: 4 fetched, 0 missing, 0 refused, 0 corrupt, 0 failed, 2 done by an earlier run" in printed
    assert site.hits["/flickr/111_abcdef_z.jpg"] == 2 and site.hits["/photos/p2.jpg"] == 1


def test_concurrency_is_bounded_and_each_host_is_paced(site, tmp_path):
    site.delay = 0.15
    urls = tmp_path / "urls.csv"
    urls.write_text("id,url\n" + "".join(f"x{i},{site.base}/photos/p{i % 6}.jpg?{i}\n" for i in range(12)))
    call_command("download_images", "--urls", str(urls), "--output", str(tmp_path / "a"), "--workers", "3",
                 "--per-host", "0", verbosity=0)
    assert site.most_in_flight == 3

    site.starts.clear()
    call_command("download_images", "--urls", str(urls), "--output", str(tmp_path / "b"), "--workers", "8",
                 "--per-host", "10", verbosity=0)
    starts = sorted(t for t, _ in site.starts)
    gaps = sorted(b - a for a, b in zip(starts, starts[1:]))
    # 10 per second: about 0.1 s apart, whatever the number of workers (without the pace 8 start at once).
    assert len(starts) == 12 and gaps[len(gaps) // 2] > 0.08 and starts[-1] - starts[0] > 0.8


def test_bad_url_lists_stop_with_a_sentence(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(CommandError, match="no usable row"):
        call_command("download_images", "--urls", str(empty), "--output", str(tmp_path / "o"), verbosity=0)
    odd = tmp_path / "odd.csv"
    odd.write_text("name,where\nx,somewhere\n")
    with pytest.raises(CommandError, match="expected a header naming the id and url columns"):
        call_command("download_images", "--urls", str(odd), "--output", str(tmp_path / "o"), verbosity=0)
    with pytest.raises(CommandError, match="no such file"):
        call_command("download_images", "--urls", str(tmp_path / "nope.csv"), "--output", str(tmp_path / "o"))


def test_flickr_size_variants():
    url = "https://farm3.staticflickr.com/2131/2515640977_e4b9b2c4f4.jpg"
    assert flickr_variant(url, "z") == "https://farm3.staticflickr.com/2131/2515640977_e4b9b2c4f4_z.jpg"
    assert flickr_variant(url.replace(".jpg", "_b.jpg"), "n").endswith("/2515640977_e4b9b2c4f4_n.jpg")
    assert flickr_variant("https://live.staticflickr.com/65535/49_ab12.jpg", "z").endswith("/49_ab12_z.jpg")
    assert flickr_variant("http://farm1.static.flickr.com/1/7_ab.jpg", "c").endswith("/7_ab_c.jpg")
    assert flickr_variant("https://example.org/2515640977_e4b9b2c4f4.jpg", "z") is None
    assert flickr_variant(url, None) is None

"""Reading geotagged photo collections for training: the three input forms, and bad input counted, not fatal."""
from __future__ import annotations

import csv
import io
import tarfile
import zipfile

import pytest
from PIL import Image

from predictor.ml.train.datasets import CsvPhotoSource, ExifFolderSource, Osv5mPhotoSource
from tests.train_synthetic import synthetic_photos


def _jpeg(image: Image.Image, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", **kwargs)
    return buffer.getvalue()


def test_exif_folder_reads_the_camera_gps_of_real_photos(shared_data):
    folder = shared_data / "exif-gps-samples"
    expected = {row["file_name"]: (float(row["lat"]), float(row["lon"]))
                for row in csv.DictReader(open(folder / "coords.csv"))}
    source = ExifFolderSource(folder / "images")
    found = {photo.id: (photo.lat, photo.lon) for photo in source}
    assert set(found) == set(expected) and len(found) == 21
    for name, (lat, lon) in expected.items():
        assert found[name] == pytest.approx((lat, lon), abs=1e-4), name
    assert source.report.yielded == 21 and source.report.no_gps == 0


def test_exif_folder_counts_photos_without_gps_and_broken_files(tmp_path):
    from PIL.ExifTags import IFD

    image = next(synthetic_photos(1, seed=1))[0]
    exif = Image.Exif()
    gps = exif.get_ifd(IFD.GPSInfo)
    gps.update({1: "S", 2: (33.0, 52.0, 12.0), 3: "E", 4: (151.0, 12.0, 36.0)})
    (tmp_path / "sydney.jpg").write_bytes(_jpeg(image, exif=exif))
    (tmp_path / "no-gps.jpg").write_bytes(_jpeg(image))
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    (tmp_path / "notes.txt").write_text("ignored")
    source = ExifFolderSource(tmp_path)
    photos = list(source)
    assert [p.id for p in photos] == ["sydney.jpg"]
    assert (photos[0].lat, photos[0].lon) == pytest.approx((-(33 + 52 / 60 + 12 / 3600), 151 + 12 / 60 + 36 / 3600))
    assert source.report.no_gps == 1 and source.report.unreadable_images == 1


def test_csv_source_with_folder_counts_bad_rows_missing_and_unreadable_images(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    rows = [("IMG_ID", "LAT", "LON", "url")]
    for image, lat, lon, image_id in synthetic_photos(4, seed=2):
        image.save(images / f"{image_id}.jpg")
        rows.append((image_id, lat, lon, f"http://example.invalid/{image_id}.jpg"))  # id without suffix
    (images / "truncated.jpg").write_bytes(_jpeg(next(synthetic_photos(1, seed=3))[0])[:200])
    rows += [("truncated.jpg", 10, 10, ""), ("gone.jpg", 1, 2, ""), ("bad-lat.jpg", "north", 2, ""),
             ("out-of-range.jpg", 95, 2, ""), ("", 1, 1, ""), (rows[1][0], 0, 0, "")]
    with open(tmp_path / "meta.csv", "w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    source = CsvPhotoSource(tmp_path / "meta.csv", images=images)
    photos = list(source)
    assert sorted(p.id for p in photos) == sorted(r[0] for r in rows[1:5])
    assert photos[0].extra["url"].startswith("http://")
    report = source.report
    assert (report.bad_rows, report.duplicate_ids, report.missing_images, report.unreadable_images) == (3, 1, 1, 1)
    assert report.yielded == 4 and "bad_rows=3" in report.summary()


def test_csv_source_streams_images_from_tar_shards(tmp_path):
    # MP16-Pro style: a metadata CSV naming images by their path inside the tar files.
    photos = list(synthetic_photos(6, seed=4))
    for part in range(2):
        with tarfile.open(tmp_path / f"mp-16-images-{part}.tar", "w") as archive:
            for image, _, _, image_id in photos[part * 3:(part + 1) * 3]:
                data = _jpeg(image)
                info = tarfile.TarInfo(f"mp16/{image_id[:3]}/{image_id}.jpg")
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
    with open(tmp_path / "meta.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "lat", "lon"])
        for _, lat, lon, image_id in photos[1:]:
            writer.writerow([f"mp16/{image_id[:3]}/{image_id}.jpg", lat, lon])
        writer.writerow(["mp16/not/in-any-tar.jpg", 3, 4])
    source = CsvPhotoSource(tmp_path / "meta.csv", images=tmp_path)
    got = {p.id: (p.lat, p.lon) for p in source}
    assert len(got) == 5
    assert got[f"mp16/{photos[2][3][:3]}/{photos[2][3]}.jpg"] == pytest.approx(photos[2][1:3])
    assert source.report.unlisted_images == 1 and source.report.missing_images == 1


def test_osv5m_layout_reads_zip_shards_and_keeps_place_columns(tmp_path):
    photos = list(synthetic_photos(5, seed=5))
    (tmp_path / "images" / "test").mkdir(parents=True)
    with zipfile.ZipFile(tmp_path / "images" / "test" / "00.zip", "w") as archive:
        for image, _, _, image_id in photos[:4]:
            archive.writestr(f"00/{image_id}.jpg", _jpeg(image))
        archive.writestr("00/corrupt.jpg", b"not an image")
    with open(tmp_path / "test.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "latitude", "longitude", "thumb_original_url", "country", "region", "city"])
        for _, lat, lon, image_id in photos:
            writer.writerow([image_id, lat, lon, "", "FR", "Ile-de-France", "Paris"])
        writer.writerow(["corrupt", 1.0, 2.0, "", "FR", "", ""])
    source = Osv5mPhotoSource(tmp_path, split="test")
    got = list(source)
    assert sorted(p.id for p in got) == sorted(p[3] for p in photos[:4])
    assert got[0].extra["country"] == "FR" and got[0].extra["city"] == "Paris"
    assert source.report.missing_images == 1 and source.report.unreadable_images == 1

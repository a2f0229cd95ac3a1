"""Importing game images: Im2GPS metadata, photos from folders and zips, attribution, and a model's guesses."""
import hashlib
import zipfile
from pathlib import Path

import pytest
from django.core.management import call_command

from core.photo_metadata import metadata_blocks
from games import importing, selectors
from games.models import GameImage, ModelGuess
from tests.conftest import make_jpeg

pytestmark = pytest.mark.django_db

HEADER = "IMG_ID,AUTHOR,LAT,LON,S3_Label,S16_Label,S365_Label,Prob_indoor,Prob_natural,Prob_urban\n"
ROWS = [
    ("111_aaa_1_1@N00.jpg", "41.9", "12.5"),
    ("222_bbb_2_2@N00.jpg", "-33.9", "18.4"),
    ("333_ccc_3_3@N00.jpg", "35.7", "139.7"),
]
ATTRIBUTION = (
    "img_id,gt_lat,predicted_lat,gt_long,predicted_long,great_circle_distance,url,available,author,license_id,"
    "license_name,license_url\n"
    "111_aaa_1_1@N00.jpg,41.9,0,12.5,0,0,https://farm1.staticflickr.com/1/111_aaa.jpg,1,anna,4,CC-BY 2.0,"
    "https://creativecommons.org/licenses/by/2.0/\n"
    "222_bbb_2_2@N00.jpg,-33.9,0,18.4,0,0,https://farm1.staticflickr.com/2/222_bbb.jpg,1,ben,0,All Rights Reserved,\n"
    "333_ccc_3_3@N00.jpg,35.7,0,139.7,0,0,,0,,,,\n")
PREDICTIONS = (
    "img_id,gt_lat,predicted_lat,gt_long,predicted_long,great_circle_distance\n"
    "111_aaa_1_1@N00.jpg,41.9,43.9,12.5,12.5,222.39\n"
    "222_bbb_2_2@N00.jpg,-33.9,-33.0,18.4,18.0,105.00\n"
    "999_zzz_9_9@N00.jpg,1,2,3,4,5\n"
    "\n"
    "street acc (1km),city acc (25km),region acc (200km),country acc (750km),continent acc (2500km),"
    "mean deviation (km)\n"
    "0.1,0.2,0.3,0.4,0.5,1000\n")


def write_meta(folder: Path, rows=ROWS, extra: str = "") -> Path:
    path = folder / "meta.csv"
    path.write_text(HEADER + "".join(f"{i},someone,{lat},{lon},1,2,3,0.1,0.6,0.3\n" for i, lat, lon in rows) + extra)
    return path


def write_images(folder: Path, names) -> Path:
    folder.mkdir(exist_ok=True)
    for n, name in enumerate(names):
        (folder / name).write_bytes(make_jpeg(colour=(40 * n, 100, 100)))
    return folder


def test_import_creates_images_with_attribution_and_model_guesses(tmp_path):
    meta = write_meta(tmp_path)
    images = write_images(tmp_path / "images", [r[0] for r in ROWS])
    (tmp_path / "scene.csv").write_text(ATTRIBUTION)
    (tmp_path / "pred.csv").write_text(PREDICTIONS)
    report = importing.import_im2gps(meta_path=meta, images=images, attribution_path=tmp_path / "scene.csv",
                                     predictions_path=tmp_path / "pred.csv")
    assert (report.created, report.updated, report.skipped) == (3, 0, [])
    assert report.guesses_created == 2
    assert report.guesses_skipped == [("999_zzz_9_9@N00.jpg", "no game image with this IMG_ID")]
    rome = GameImage.objects.get(source_id="111_aaa_1_1@N00.jpg")
    assert (rome.lat, rome.lon, rome.author, rome.licence_name) == (41.9, 12.5, "anna", "CC-BY 2.0")
    assert rome.is_open_licence and rome.p_natural == pytest.approx(0.6)
    assert rome.image.name.startswith("game_images/") and "111_aaa" not in rome.image.name
    stored = Path(rome.image.path).read_bytes()
    # The image door's copy, named by the hash of its own bytes; the original is never kept.
    assert stored != (images / "111_aaa_1_1@N00.jpg").read_bytes()
    assert rome.image.name == f"game_images/{hashlib.sha256(stored).hexdigest()[:32]}.jpg"
    assert metadata_blocks(stored) == []
    assert not GameImage.objects.get(source_id="222_bbb_2_2@N00.jpg").is_open_licence  # All Rights Reserved
    assert not GameImage.objects.get(source_id="333_ccc_3_3@N00.jpg").is_open_licence  # unknown
    guess = ModelGuess.objects.get(image=rome)
    assert (guess.model_name, guess.lat, guess.distance_km) == ("ISNs(M, f*, S3)", 43.9, pytest.approx(222.39, abs=0.01))
    assert selectors.opponent_models() == ["ISNs(M, f*, S3)"]
    assert list(selectors.playable_images(model_name="ISNs(M, f*, S3)")) == [rome]


def test_rerunning_updates_in_place_and_never_duplicates(tmp_path):
    meta = write_meta(tmp_path)
    images = write_images(tmp_path / "images", [r[0] for r in ROWS])
    (tmp_path / "pred.csv").write_text(PREDICTIONS)
    kwargs = dict(meta_path=meta, images=images, predictions_path=tmp_path / "pred.csv")
    importing.import_im2gps(**kwargs)
    again = importing.import_im2gps(**kwargs)
    assert (again.created, again.updated, again.unchanged, again.guesses_created, again.guesses_updated) == (0, 0, 3, 0, 0)
    write_meta(tmp_path, [("111_aaa_1_1@N00.jpg", "42.0", "12.5")] + ROWS[1:])
    (tmp_path / "pred.csv").write_text(PREDICTIONS.replace("43.9", "44.0"))
    third = importing.import_im2gps(**kwargs)
    assert (third.created, third.updated, third.unchanged, third.guesses_updated) == (0, 1, 2, 1)
    assert GameImage.objects.count() == 3 and ModelGuess.objects.count() == 2
    assert GameImage.objects.get(source_id="111_aaa_1_1@N00.jpg").lat == 42.0
    # A metadata-only re-run (no photos given) keeps the photos already stored.
    fourth = importing.import_im2gps(meta_path=meta)
    assert fourth.skipped == [] and all(i.image for i in GameImage.objects.all())


def test_bad_rows_are_skipped_with_reasons(tmp_path):
    extra = ("444_ddd_4_4@N00.jpg,x,95.0,10,1,2,3,0.1,0.6,0.3\n"
             "555_eee_5_5@N00.jpg,x,north,10,1,2,3,0.1,0.6,0.3\n"
             ",x,10,10,1,2,3,0.1,0.6,0.3\n"
             "666_fff_6_6@N00.jpg,x,10,10,1,2,3,0.1,0.6,0.3\n")
    meta = write_meta(tmp_path, extra=extra)
    images = write_images(tmp_path / "images", [r[0] for r in ROWS] + ["444_ddd_4_4@N00.jpg"])
    report = importing.import_im2gps(meta_path=meta, images=images)
    reasons = dict(report.skipped)
    assert report.created == 3
    assert "out of range" in reasons["444_ddd_4_4@N00.jpg"]
    assert "bad row" in reasons["555_eee_5_5@N00.jpg"]
    assert "bad row" in reasons["line 7"]
    assert reasons["666_fff_6_6@N00.jpg"] == "missing image file"
    assert GameImage.objects.count() == 3


def test_corrupt_and_truncated_images_are_skipped(tmp_path):
    meta = write_meta(tmp_path)
    images = write_images(tmp_path / "images", [ROWS[0][0]])
    (images / ROWS[1][0]).write_bytes(b"this is not a jpeg")
    (images / ROWS[2][0]).write_bytes(make_jpeg(width=400, height=300)[:600])
    report = importing.import_im2gps(meta_path=meta, images=images)
    reasons = dict(report.skipped)
    assert report.created == 1
    assert "corrupt image" in reasons[ROWS[1][0]] and "corrupt image" in reasons[ROWS[2][0]]


def test_zip_import_refuses_path_traversal_entries(tmp_path, settings):
    meta = write_meta(tmp_path)
    archive = tmp_path / "photos.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr(f"gps_query_imgs/{ROWS[0][0]}", make_jpeg())
        zf.writestr(f"../../{ROWS[1][0]}", make_jpeg())
        zf.writestr(f"/abs/{ROWS[2][0]}", make_jpeg())
    report = importing.import_im2gps(meta_path=meta, images=archive)
    assert report.created == 1
    assert dict(report.skipped)[ROWS[1][0]] == "missing image file"
    assert sum("unsafe path" in note for note in report.notes) == 2
    written = {p.name for p in Path(settings.MEDIA_ROOT).rglob("*") if p.is_file()}
    assert len(written) == 1 and not (tmp_path.parent / ROWS[1][0]).exists()


def test_flickr_urls_are_derived_from_the_img_id():
    assert importing.flickr_url("Wyoming_00005_264085120_70bc6791b2_97_48947971@N00.jpg") == \
        "https://live.staticflickr.com/97/264085120_70bc6791b2.jpg"
    assert importing.flickr_url("not-a-flickr-name.jpg") is None


def test_missing_files_give_a_clear_command_error(tmp_path):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="does not exist"):
        call_command("import_im2gps", "--meta", str(tmp_path / "nope.csv"))
    (tmp_path / "wrong.csv").write_text("a,b\n1,2\n")
    with pytest.raises(CommandError, match="lacks the column"):
        call_command("import_im2gps", "--meta", str(tmp_path / "wrong.csv"))


def test_the_command_reports_created_and_skipped(tmp_path, capsys):
    meta = write_meta(tmp_path)
    images = write_images(tmp_path / "images", [r[0] for r in ROWS[:2]])
    call_command("import_im2gps", "--meta", str(meta), "--images", str(images))
    out = capsys.readouterr().out
    assert "2 created" in out and "1 skipped" in out and "missing image file" in out


def test_import_game_images_uses_the_configured_folder(tmp_path, settings, capsys):
    folder = tmp_path / "im2gps"
    folder.mkdir()
    write_meta(folder)
    write_images(folder / "images", [r[0] for r in ROWS])
    (folder / "scene_M_p_im2gps.csv").write_text(ATTRIBUTION)
    (folder / "ISNs_M-fstar-S3.csv").write_text(PREDICTIONS)
    settings.GAME_IMAGES_DIR = str(folder)
    settings.IM2GPS_ZIP_URL = ""
    call_command("import_game_images")
    assert "3 created" in capsys.readouterr().out
    assert ModelGuess.objects.filter(model_name="ISNs(M, f*, S3)").count() == 2


def test_import_game_images_says_so_when_the_network_is_unavailable(tmp_path, settings, capsys):
    settings.GAME_IMAGES_DIR = str(tmp_path / "empty")
    settings.IM2GPS_ZIP_URL = "http://127.0.0.1:9/gps_query_imgs.zip"  # nothing listens on the discard port
    call_command("import_game_images", "--timeout", "2")  # must not raise
    out = capsys.readouterr().out
    assert "network unavailable" in out and "not imported" in out
    assert GameImage.objects.count() == 0


def test_the_published_im2gps_files(shared_data, tmp_path, settings):
    base = shared_data / "geoestimation"
    report = importing.ImportReport()
    meta = importing.read_meta(base / "im2gps_places365.csv", report)
    attribution = importing.read_attribution(base / "scene_M_p_im2gps.csv")
    predictions = importing.read_predictions(base / "results_im2gps" / "ISNs_M-fstar-S3.csv", report)
    assert len(meta) == len(attribution) == len(predictions) == 237 and report.skipped == []
    assert importing.model_name_for(base / "results_im2gps" / "ISNs_M-fstar-S3.csv") == "ISNs(M, f*, S3)"
    # Import them all with generated stand-in photos. The demo showed 48 (every CC licence); under the licence policy
    # 36 are playable (BY, BY-SA, and NC on a non-commercial site); the 12 ND photos need a staff reason.
    images = write_images(tmp_path / "images", [row.img_id for row in meta])
    result = importing.import_im2gps(meta_path=base / "im2gps_places365.csv", images=images,
                                     attribution_path=base / "scene_M_p_im2gps.csv",
                                     predictions_path=base / "results_im2gps" / "ISNs_M-fstar-S3.csv")
    assert (result.created, len(result.skipped), result.guesses_created) == (237, 0, 237)
    assert selectors.playable_images(model_name="ISNs(M, f*, S3)").count() == 36
    assert GameImage.objects.filter(licence_kind="nd").count() == 12
    settings.GAME_COMMERCIAL = True
    assert selectors.playable_images(model_name="ISNs(M, f*, S3)").count() == 9  # 3 CC BY + 6 CC BY-SA
    settings.GAME_COMMERCIAL = False
    assert GameImage.objects.filter(is_open_licence=False, licence_name="All Rights Reserved").count() == 137
    seattle = ModelGuess.objects.get(image__source_id="seattle_00064_443151803_90c945e87c_191_74223826@N00.jpg")
    assert seattle.distance_km == pytest.approx(0.25, abs=0.01)


def test_download_gives_up_after_repeated_network_failures(tmp_path, monkeypatch):
    calls = []

    def unreachable(url, **kwargs):
        calls.append(url)
        raise importing.urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(importing, "download", unreachable)
    rows = [(f"{i}{i}{i}_abc_{i}_{i}@N00.jpg", "10", "10") for i in range(1, 7)]
    report = importing.import_im2gps(meta_path=write_meta(tmp_path, rows), download_missing=True)
    assert len(calls) == importing.MAX_NETWORK_FAILURES
    assert calls[0] == "https://live.staticflickr.com/1/111_abc.jpg"
    assert len(report.skipped) == 6 and "network failed repeatedly" in report.skipped[-1][1]
    assert GameImage.objects.count() == 0


def test_download_fetches_missing_photos_from_the_attribution_url(tmp_path, monkeypatch):
    fetched = []
    monkeypatch.setattr(importing, "download", lambda url, **kw: fetched.append(url) or make_jpeg())
    (tmp_path / "scene.csv").write_text(ATTRIBUTION)
    report = importing.import_im2gps(meta_path=write_meta(tmp_path), attribution_path=tmp_path / "scene.csv",
                                     download_missing=True)
    assert report.created == 3
    assert fetched == ["https://farm1.staticflickr.com/1/111_aaa.jpg", "https://farm1.staticflickr.com/2/222_bbb.jpg",
                       "https://live.staticflickr.com/3/333_ccc.jpg"]

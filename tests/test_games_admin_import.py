"""Import from the admin: upload Im2GPS files, see a preview row by row, apply it all or nothing."""
from __future__ import annotations

import io
import re
import zipfile

import pytest
from django.contrib.admin.models import ADDITION, LogEntry
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from games import importing
from games.models import GameImage, ModelGuess
from tests.conftest import make_jpeg

pytestmark = pytest.mark.django_db

IMPORT = reverse("admin:games_gameimage_import")
HEADER = "IMG_ID,AUTHOR,LAT,LON,S16,S32,Prob_indoor,Prob_natural,Prob_urban\n"
IDS = ["100_aa_1_x@N00.jpg", "200_bb_2_y@N00.jpg", "300_cc_3_z@N00.jpg"]


def meta_csv(rows=None, header=HEADER) -> SimpleUploadedFile:
    rows = rows if rows is not None else [f"{IDS[0]},ann,48.85,2.29,1,1,0.1,0.2,0.7",
                                         f"{IDS[1]},bob,40.68,-74.04,1,1,0.2,0.2,0.6",
                                         f"{IDS[2]},cyd,-33.85,151.21,1,1,0.1,0.8,0.1"]
    return SimpleUploadedFile("im2gps_places365.csv", (header + "\n".join(rows) + "\n").encode(), "text/csv")


def photos_zip(entries: dict[str, bytes] | None = None) -> SimpleUploadedFile:
    entries = entries if entries is not None else {
        f"photos/{img_id}": make_jpeg(colour=(40 * i, 80, 120)) for i, img_id in enumerate(IDS)}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return SimpleUploadedFile("photos.zip", buffer.getvalue(), "application/zip")


def predictions_csv() -> SimpleUploadedFile:
    text = "img_id,gt_lat,predicted_lat,gt_long,predicted_long,great_circle_distance\n" + "".join(
        f"{img_id},0,{lat},0,{lon},0\n" for img_id, lat, lon in
        [(IDS[0], 48.0, 2.0), (IDS[1], 41.0, -74.0), (IDS[2], -30.0, 150.0)])
    return SimpleUploadedFile("ISNs_M-fstar-S3.csv", text.encode(), "text/csv")


def preview(client, **files):
    return client.post(IMPORT, {"meta": files.pop("meta", None) or meta_csv(), **files})


def stored_photos() -> list[str]:
    return default_storage.listdir("game_images")[1] if default_storage.exists("game_images") else []


def error_rows(response) -> list[str]:
    table = re.search(r'<table class="import-errors".*?</table>', response.content.decode(), re.S)
    return re.findall(r"<tr><td>(.*?)</td><td>(.*?)</td></tr>", table.group(0)) if table else []


def test_preview_then_apply_creates_images_guesses_and_log_entries(admin_client):
    page = preview(admin_client, images=photos_zip(), predictions=predictions_csv())
    html = page.content.decode()
    assert page.status_code == 200
    assert "3 to create, 0 to update, 0 unchanged, 0 refused" in html
    assert "model guesses (ISNs(M, f*, S3)): 3 to create" in html
    assert not GameImage.objects.exists() and not ModelGuess.objects.exists() and stored_photos() == []
    token = re.search(r'name="token" value="([0-9a-f]+)"', html).group(1)

    done = admin_client.post(IMPORT, {"token": token, "apply": "Apply"})
    assert done.status_code == 302 and done["Location"] == reverse("admin:games_gameimage_changelist")
    assert sorted(GameImage.objects.values_list("source_id", flat=True)) == sorted(IDS)
    assert ModelGuess.objects.filter(model_name="ISNs(M, f*, S3)").count() == 3
    assert len(stored_photos()) == 3
    image = GameImage.objects.get(source_id=IDS[0])
    assert (image.author, image.p_urban, image.is_open_licence) == ("ann", 0.7, False)
    assert image.difficulty in ("easy", "medium", "hard")  # rated after the import
    entries = LogEntry.objects.filter(action_flag=ADDITION, content_type__model="gameimage")
    assert entries.count() == 3
    assert "Imported from im2gps_places365.csv, photos.zip, ISNs_M-fstar-S3.csv" in entries[0].get_change_message()
    # The preview is used up: applying it again does nothing more.
    again = admin_client.post(IMPORT, {"token": token, "apply": "Apply"}, follow=True)
    assert "This preview has expired" in again.content.decode()


def test_reimport_previews_updates_and_unchanged_rows(admin_client):
    token = re.search(r'name="token" value="(\w+)"', preview(admin_client, images=photos_zip()).content.decode())[1]
    admin_client.post(IMPORT, {"token": token, "apply": "Apply"})
    rows = [f"{IDS[0]},ann,48.85,2.29,1,1,0.1,0.2,0.7", f"{IDS[1]},bob,41.00,-74.04,1,1,0.2,0.2,0.6"]
    html = preview(admin_client, meta=meta_csv(rows)).content.decode()  # no zip: the stored photos are kept
    assert "0 to create, 1 to update, 1 unchanged, 0 refused" in html
    assert f"<tr><td>{IDS[1]}</td><td>updated</td></tr>" in html
    assert GameImage.objects.get(source_id=IDS[1]).lat == 40.68  # not yet applied


def test_wrong_columns_are_refused_as_a_whole(admin_client):
    page = preview(admin_client, meta=meta_csv(header="IMG_ID,AUTHOR,LATITUDE,LON\n"), images=photos_zip())
    html = page.content.decode()
    assert "This file cannot be imported" in html and "lacks the column(s) LAT" in html
    assert 'id="apply-import"' not in html
    assert not GameImage.objects.exists()


def test_duplicated_ids_and_bad_coordinates_are_reported_row_by_row_and_block_the_import(admin_client):
    rows = [f"{IDS[0]},ann,48.85,2.29,1,1,0.1,0.2,0.7", f"{IDS[1]},bob,95.0,-74.04,1,1,0.2,0.2,0.6",
            f"{IDS[2]},cyd,-33.85,181.5,1,1,0.1,0.8,0.1", f"{IDS[0]},ann,48.86,2.30,1,1,0.1,0.2,0.7"]
    page = preview(admin_client, meta=meta_csv(rows), images=photos_zip())
    errors = error_rows(page)
    assert (IDS[0], "bad row at line 2: duplicated IMG_ID (it appears on lines 2, 5)") in errors
    assert (IDS[0], "bad row at line 5: duplicated IMG_ID (it appears on lines 2, 5)") in errors
    assert (IDS[1], "bad row at line 3: coordinates out of range: 95.0, -74.04") in errors
    assert (IDS[2], "bad row at line 4: coordinates out of range: -33.85, 181.5") in errors
    html = page.content.decode()
    assert "Nothing will be imported while any row is refused" in html and 'id="apply-import"' not in html
    assert not GameImage.objects.exists() and stored_photos() == []


def test_zip_with_path_traversal_and_a_non_image_is_reported_and_nothing_lands(admin_client):
    entries = {IDS[0]: make_jpeg(), IDS[1]: b"%PDF-1.4 not a photo", "../" + IDS[2]: make_jpeg(),
               "/etc/evil.jpg": make_jpeg()}
    page = preview(admin_client, images=photos_zip(entries))
    errors = error_rows(page)
    assert any(what == IDS[1] and reason.startswith("corrupt image") for what, reason in errors)
    assert (f"zip entry ../{IDS[2]}", "unsafe path (absolute, or leaves the archive)") in errors
    assert ("zip entry /etc/evil.jpg", "unsafe path (absolute, or leaves the archive)") in errors
    assert (IDS[2], "missing image file") in errors
    assert not GameImage.objects.exists() and stored_photos() == []


def test_a_strict_import_rolls_back_the_good_rows_and_their_files(tmp_path):
    meta = tmp_path / "meta.csv"
    meta.write_text(HEADER + f"{IDS[0]},ann,48.85,2.29,1,1,0.1,0.2,0.7\n{IDS[1]},bob,40.68,-74.04,1,1,0.2,0.2,0.6\n")
    images = tmp_path / "images"
    images.mkdir()
    (images / IDS[0]).write_bytes(make_jpeg())
    (images / IDS[1]).write_bytes(b"broken")
    report = importing.import_im2gps(meta_path=meta, images=images, strict=True)
    assert report.rolled_back and report.created == 1 and len(report.skipped) == 1
    assert not GameImage.objects.exists() and stored_photos() == []
    # Without strict (the command line), the good row is imported and the bad one skipped with its reason.
    report = importing.import_im2gps(meta_path=meta, images=images)
    assert not report.rolled_back and list(GameImage.objects.values_list("source_id", flat=True)) == [IDS[0]]


def test_the_import_page_needs_staff(client):
    assert client.get(IMPORT).status_code == 302

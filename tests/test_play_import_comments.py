"""Issue 13 section 2: the Im2GPS photos' own JPEG comments are read (every segment, any order, missing fields
named), `import_im2gps --images` works without a CSV, a CSV wins and disagreements are reported, the licence
policy is applied, and bulk publishing works on thousands of images. Also: one reader of the Im2GPS files."""
from __future__ import annotations

import io
import zipfile

import pytest
from django.core.management import call_command
from django.urls import reverse

from core import im2gps
from core.photo_metadata import jpeg_comments
from games import importing, selectors
from games.models import GameImage, ModelGuess
from predictor.ml import evaluation
from tests.conftest import make_jpeg

KNOWN = "1079732334_0baae72c4f_1271_25159586@N00.jpg"


def with_comments(jpeg: bytes, fields: list[tuple[str, str]], garbage: bytes = b"") -> bytes:
    """A JPEG with one COM segment per field, `name: value` ended by NUL and followed by garbage, after SOI."""
    segments = b""
    for name, value in fields:
        payload = f"{name}: {value}".encode() + b"\x00" + garbage
        segments += b"\xff\xfe" + (len(payload) + 2).to_bytes(2, "big") + payload
    return jpeg[:2] + segments + jpeg[2:]


def test_every_comment_of_a_real_photo_is_read(shared_data):
    data = (shared_data / "im2gps3k-cc" / "photos" / KNOWN).read_bytes()
    assert len(jpeg_comments(data)) == 12  # Pillow's info["comment"] keeps one of them
    comments = im2gps.read_photo_comments(data)
    assert comments.missing == [] and comments.problems == []
    assert comments.position == (34.902638, 132.0891)
    assert (comments.flickr_id, comments.owner, comments.title, comments.licence_id) == (
        "1079732334", "25159586@N00", "protect us from the terrorists", 4)
    assert comments.date_taken == "2007-08-08 12:08:46"
    assert comments.photo_page == "https://www.flickr.com/photos/25159586@N00/1079732334"


def test_fields_in_any_order_with_garbage_after_the_nul_and_missing_ones_named():
    data = with_comments(make_jpeg(), [("longitude", "-99.75809"), ("license", "2"), ("latitude", "19.109568"),
                                       ("photo", "42 abc 7")], garbage=b"latitude: 1.0 owner: junk")
    comments = im2gps.read_photo_comments(data)
    assert comments.position == (19.109568, -99.75809) and comments.licence_id == 2
    assert comments.missing == ["owner", "title", "datetaken"]
    assert im2gps.read_photo_comments(make_jpeg()).missing == list(im2gps.PHOTO_FIELDS)
    assert im2gps.read_photo_comments(b"not a jpeg").missing == list(im2gps.PHOTO_FIELDS)
    bad = im2gps.read_photo_comments(with_comments(make_jpeg(), [("latitude", "north"), ("longitude", "1")]))
    assert bad.position is None and bad.problems == ["latitude 'north' is not a number"]


@pytest.mark.django_db
def test_import_without_a_csv_from_a_zip_reads_truth_attribution_and_licence(shared_data, tmp_path, capsys):
    photos = sorted((shared_data / "im2gps3k-cc" / "photos").glob("*.jpg"))[:6]
    archive = tmp_path / "photos.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        for path in photos:
            handle.write(path, f"im2gps3k/{path.name}")
    call_command("import_im2gps", "--images", str(archive),
                 "--predictions", str(shared_data / "geoestimation" / "results_im2gps3k" / "ISNs_M-fstar-S3.csv"))
    out = capsys.readouterr().out
    assert "images: 6 created" in out and "playable: 6 of 6 game images (against ISNs(M, f*, S3))" in out
    image = GameImage.objects.get(source_id=KNOWN)
    assert (image.lat, image.lon, image.author, image.title) == (34.902638, 132.0891, "25159586@N00",
                                                                 "protect us from the terrorists")
    assert (image.licence_name, image.licence_url, image.licence_kind) == (
        "CC BY 2.0", "https://creativecommons.org/licenses/by/2.0/", "open")
    assert image.source_url == "https://www.flickr.com/photos/25159586@N00/1079732334"
    assert image.date_taken == "2007-08-08 12:08:46"
    assert ModelGuess.objects.filter(model_name="ISNs(M, f*, S3)").count() == 6


@pytest.mark.django_db
def test_a_csv_wins_for_the_truth_and_every_disagreement_is_reported(shared_data, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    data = (shared_data / "im2gps3k-cc" / "photos" / KNOWN).read_bytes()
    (folder / KNOWN).write_bytes(data)
    meta = tmp_path / "meta.csv"
    meta.write_text("IMG_ID,AUTHOR,LAT,LON,S3_Label,Prob_indoor,Prob_natural,Prob_urban\n"
                    f"{KNOWN},someone-else,35.0,132.0891,2,0.1,0.2,0.7\n")
    report = importing.import_im2gps(meta_path=meta, images=folder)
    assert report.created == 1
    assert report.disagreements == [(KNOWN, "latitude: CSV 35.0, photo comment 34.902638"),
                                    (KNOWN, "owner: CSV 'someone-else', photo comment '25159586@N00'")]
    assert any("disagree 2 time(s)" in line for line in report.lines())
    image = GameImage.objects.get()
    assert (image.lat, image.p_urban) == (35.0, 0.7)  # the CSV's truth and scene
    assert image.author == "25159586@N00" and image.licence_name == "CC BY 2.0"  # the photo's attribution


@pytest.mark.django_db
def test_the_licence_policy_is_applied_at_import(tmp_path, settings, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    for number, licence in enumerate((0, 1, 3, 4, 6, 7, 8, 9, 10), start=1):
        (folder / f"{number}00_aa_1_{number}@N00.jpg").write_bytes(with_comments(
            make_jpeg(colour=(20 * number, 40, 60)), [("photo", f"{number}00 aa 1"), ("owner", f"{number}@N00"),
                                                      ("license", str(licence)), ("latitude", str(number)),
                                                      ("longitude", str(2 * number))]))
    results = tmp_path / "answers.csv"
    results.write_text(",".join(im2gps.RESULTS_HEADER) + "\n" + "".join(
        f"{number}00_aa_1_{number}@N00.jpg,{number},0,{2 * number},0,0\n" for number in range(1, 10)))
    call_command("import_im2gps", "--images", str(folder), "--predictions", str(results), "--model-name", "m")
    out = capsys.readouterr().out
    kinds = dict(GameImage.objects.values_list("licence_name", "licence_kind"))
    assert kinds == {"All Rights Reserved": "arr", "CC BY-NC-SA 2.0": "nc", "CC BY-NC-ND 2.0": "nd",
                     "CC BY 2.0": "open", "CC BY-ND 2.0": "nd", "No known copyright restrictions": "open",
                     "United States Government Work": "open", "CC0 1.0": "open", "Public Domain Mark 1.0": "open"}
    # Open five, NC one (a non-commercial site), and ND twice plus All Rights Reserved need a staff reason.
    assert "playable: 6 of 9 game images (against m)" in out
    assert "not playable: 3 have a licence that needs a staff reason" in out
    settings.GAME_COMMERCIAL = True
    assert selectors.playable_count() == 5
    assert "1 have a non-commercial licence and this site is commercial" in "\n".join(selectors.playability_lines())


@pytest.mark.django_db
def test_make_playable_and_the_admin_publish_thousands_at_once(admin_client, tmp_path):
    GameImage.objects.bulk_create([
        GameImage(source_id=f"{n}_x_1_{n}@N00.jpg", lat=0, lon=0, image=f"game_images/{n}.jpg", active=False,
                  licence_name="All Rights Reserved", licence_kind="arr") for n in range(1500)])
    out = io.StringIO()
    call_command("make_playable", "--licence", "arr", stdout=out)
    assert "0 image(s) playable, 1500 refused" in out.getvalue()
    # The admin: "select all 1,500" sends one page of checkboxes; the reason form must not send 1,500 fields.
    changelist = reverse("admin:games_gameimage_changelist")
    page_ids = list(GameImage.objects.order_by("-pk").values_list("pk", flat=True)[:50])
    form = admin_client.post(changelist, {"action": "activate", "select_across": "1", "index": "0",
                                          "_selected_action": page_ids})
    assert form.status_code == 200 and "1500 of the 1500 selected images" in form.content.decode()
    assert form.content.decode().count('name="_selected_action"') == 1
    done = admin_client.post(changelist, {"action": "activate", "select_across": "1", "apply_reason": "1",
                                          "_selected_action": page_ids[:1], "reason": "Licensed from the owners"})
    assert done.status_code == 302
    assert GameImage.objects.filter(active=True, activation_reason="Licensed from the owners").count() == 1500
    call_command("make_playable", "--all", "--dry-run", stdout=out)
    assert "1500 image(s) chosen" in out.getvalue()


def test_one_reader_one_set_of_rules_for_evaluation_and_import(tmp_path):
    path = tmp_path / "results.csv"
    path.write_text(",".join(im2gps.RESULTS_HEADER) + "\n" + "a.jpg,1,2,3,4,5\nb.jpg,1,north,3,4,5\nc.jpg,1,2,3,4,5\n")
    # The evaluation refuses the file at the bad row; the import skips that row, with the same message.
    with pytest.raises(evaluation.ResultsFormatError, match=r"results.csv:3: non-numeric value"):
        evaluation.read_results(path)
    report = importing.ImportReport()
    predictions = importing.read_predictions(path, report)
    assert [p.img_id for p in predictions] == ["a.jpg", "c.jpg"]
    assert report.guesses_skipped == [("b.jpg", "bad row at line 3: non-numeric value in 'b.jpg,1,north,3,4,5'")]
    (tmp_path / "header.csv").write_text("img_id,lat\n")
    for read in (evaluation.read_results, importing.read_predictions):
        with pytest.raises((evaluation.ResultsFormatError, importing.ImportFailed), match="expected the header"):
            read(tmp_path / "header.csv")


@pytest.mark.django_db(transaction=True)
def test_photos_no_results_file_covers_get_the_active_trained_models_guess(shared_data, tiny_bundle,
                                                                           tiny_trained_bundle, tmp_path, capsys):
    from predictor import inference, registry

    folder = tmp_path / "photos"
    folder.mkdir()
    for path in sorted((shared_data / "im2gps3k-cc" / "photos").glob("*.jpg"))[:3]:
        (folder / path.name).write_bytes(path.read_bytes())
    registry.install_bundle(tiny_bundle)  # the untrained demo bundle is active: it never answers for the game
    inference.reset_engine()
    call_command("import_im2gps", "--images", str(folder))
    out = capsys.readouterr().out
    assert "3 game image(s) have no published answer; the active model tiny-untrained is untrained" in out
    assert not ModelGuess.objects.exists() and "not playable: 3 have no answer of any trained model" in out
    assert "tiny-untrained is untrained (random weights), so it is never a game opponent" in out
    registry.install_bundle(tiny_trained_bundle)  # a trained model becomes active
    inference.reset_engine()
    try:
        call_command("import_im2gps", "--images", str(folder))
        out = capsys.readouterr().out
    finally:
        inference.reset_engine()
    assert "3 game image(s) have no published answer: recompute job" in out
    assert "3 guess(es) stored for tiny-trained" in out and "playable: 3 of 3" in out
    assert ModelGuess.objects.filter(model_name="tiny-trained").count() == 3
    assert selectors.choosable_opponents() == ["tiny-trained"]

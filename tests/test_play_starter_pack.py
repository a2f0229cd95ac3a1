"""Issue 13: the starter pack ships with the app, rebuilds byte-identically, and a fresh install plays a whole game
on it against the paper's ISN answers, through the API, offline."""
from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import pytest
from django.core.management import call_command
from django.urls import reverse
from PIL import Image

from core import im2gps
from core.photo_metadata import metadata_blocks
from games import selectors, starter
from games.models import Game, GameImage, ModelGuess

PACK = starter.PACK_DIR
ISN = "ISNs(M, f*, S3)"


def manifest() -> dict:
    return json.loads((PACK / "manifest.json").read_text(encoding="utf-8"))


def test_the_committed_pack_is_clean_small_and_says_each_photos_licence(shared_data):
    entries = manifest()["photos"]
    assert len(entries) == 188 and [e["id"] for e in entries] == sorted(e["id"] for e in entries)
    files = sorted((PACK / "photos").iterdir())
    assert sorted(f"photos/{path.name}" for path in files) == sorted(e["file"] for e in entries)
    assert sum(path.stat().st_size for path in files) <= 20 * 1000 * 1000
    licences = {}
    results = {name: {row.img_id: row for row in im2gps.read_results(
        shared_data / "geoestimation" / "results_im2gps3k" / f"{stem}.csv").rows}
        for stem, name in starter.ANSWER_FILES.items()}
    for entry in entries:
        data = (PACK / entry["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"] and entry["file"].endswith(entry["sha256"][:32] + ".webp")
        assert metadata_blocks(data) == []
        with Image.open(io.BytesIO(data)) as image:
            assert image.format == "WEBP" and max(image.size) <= 1024 and image.size == (entry["width"], entry["height"])
        original = im2gps.read_photo_comments((shared_data / "im2gps3k-cc" / "photos" / entry["id"]).read_bytes())
        assert (entry["lat"], entry["lon"]) == original.position
        assert entry["owner"] == original.owner and entry["title"] == original.title
        assert entry["photo_page"] == f"https://www.flickr.com/photos/{original.owner}/{original.flickr_id}"
        licences[entry["licence"]["name"]] = licences.get(entry["licence"]["name"], 0) + 1
        for model, rows in results.items():
            row = rows[entry["id"]]
            assert entry["answers"][model] == {"lat": row.predicted_lat, "lon": row.predicted_lon}
    assert licences == {"CC BY 2.0": 131, "CC BY-SA 2.0": 57}
    readme = (PACK / "README.md").read_text()
    assert "stay under CC BY-SA 2.0" in readme and readme.count("| CC BY-SA 2.0 |") == 57


def test_the_build_command_rebuilds_the_pack_byte_for_byte(shared_data, tmp_path):
    out = io.StringIO()
    call_command("build_starter_pack", "--source", str(shared_data / "im2gps3k-cc" / "photos"), "--results",
                 str(shared_data / "geoestimation" / "results_im2gps3k"), "--out", str(tmp_path), stdout=out)
    assert "188 photos" in out.getvalue()
    built = {str(path.relative_to(tmp_path)): path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()}
    committed = {str(path.relative_to(PACK)): path.read_bytes() for path in PACK.rglob("*") if path.is_file()}
    assert built.keys() == committed.keys()
    assert [name for name in built if built[name] != committed[name]] == []


def post(client, url, body=None):
    return client.post(url, data=json.dumps(body or {}), content_type="application/json",
                       HTTP_ACCEPT="application/json")


@pytest.mark.django_db
def test_a_fresh_install_plays_a_whole_game_on_the_starter_pack_through_the_api(client, settings):
    settings.GAME_IMAGES_DIR = ""
    settings.IM2GPS_ZIP_URL = "http://127.0.0.1:9/never-fetched.zip"  # no network is needed, or tried
    out = io.StringIO()
    call_command("import_game_images", stdout=out)
    assert "starter pack: 188 created" in out.getvalue() and "playable: 188 of 188" in out.getvalue()
    assert "never-fetched" not in out.getvalue()
    assert ModelGuess.objects.filter(model_name=ISN).count() == 188
    home = client.get(reverse("home")).content.decode()
    assert 'id="start-game"' in home and ISN in home and "No game yet" not in home

    state = post(client, reverse("game-api-start")).json()
    assert state["opponents"] == [ISN]
    key, manifest_by_id = state["key"], {e["id"]: e for e in manifest()["photos"]}
    seen = []
    for index in range(settings.GAME_ROUNDS):
        if index:
            shown = post(client, reverse("game-api-next", args=[key])).json()["round"]
        else:
            shown = client.get(reverse("game-api-state", args=[key])).json()["rounds"][0]
        game = Game.objects.get(key=key)
        image = game.rounds.get(index=index).image
        entry = manifest_by_id[image.source_id]
        # Before the guess: nothing in the API identifies the photo or its place.
        # (Earlier rounds are revealed in the state: they may share an owner; the current one must say nothing.)
        state_now = client.get(reverse("game-api-state", args=[key])).json()
        assert state_now["rounds"][index] == shown and set(shown) == {"index", "photo_url", "guessed"}
        before = json.dumps(shown) + json.dumps({k: v for k, v in state_now.items() if k != "rounds"})
        for secret in (entry["owner"], entry["title"], entry["photo_page"], entry["id"].split("_")[0],
                       str(entry["lat"]), str(entry["lon"])):
            assert not secret or secret not in before, secret
        photo = b"".join(client.get(shown["photo_url"]).streaming_content)
        assert photo == (PACK / entry["file"]).read_bytes() and metadata_blocks(photo) == []
        reveal = post(client, reverse("game-api-guess", args=[key]),
                      {"round": index, "lat": entry["lat"] + 1.0, "lon": entry["lon"]}).json()["round"]
        # After it: the answer, the credit and the places.
        assert (reveal["truth"]["lat"], reveal["truth"]["lon"]) == (entry["lat"], entry["lon"])
        assert (reveal["author"], reveal["title"], reveal["source_url"]) == (entry["owner"], entry["title"],
                                                                              entry["photo_page"])
        assert reveal["licence_name"] in ("CC BY 2.0", "CC BY-SA 2.0")
        assert reveal["ais"][0]["name"] == ISN
        assert (reveal["ais"][0]["lat"], reveal["ais"][0]["lon"]) == (entry["answers"][ISN]["lat"],
                                                                      entry["answers"][ISN]["lon"])
        assert reveal["truth"]["place"] and reveal["guess"]["place"] and reveal["ais"][0]["place"]
        seen.append(image.source_id)
    summary = client.get(reverse("game-api-summary", args=[key])).json()
    assert summary["finished"] and summary["rounds_played"] == settings.GAME_ROUNDS
    assert [r["author"] for r in summary["rounds"]] == [manifest_by_id[i]["owner"] for i in seen]
    credits = client.get(reverse("credits")).content.decode()
    assert all(manifest_by_id[i]["photo_page"] in credits for i in seen)
    assert "CC BY-SA 2.0" in credits


@pytest.mark.django_db
def test_the_pack_can_be_switched_off_and_is_never_mixed_in_silently(client, settings, tmp_path):
    settings.GAME_IMAGES_DIR = ""
    call_command("import_game_images", stdout=io.StringIO())
    assert selectors.playable_count() == 188
    # An operator's own images: with GEOWEB_GAME_IMAGES set the pack is off unless asked for.
    settings.GAME_IMAGES_DIR = str(tmp_path)
    settings.IM2GPS_ZIP_URL = ""
    out = io.StringIO()
    call_command("import_game_images", stdout=out)
    assert "starter pack: switched off" in out.getvalue()
    assert selectors.playable_count() == 0
    assert "188 are in the starter pack, which is switched off" in client.get(reverse("home")).content.decode()
    settings.GAME_STARTER_PACK = "1"
    assert selectors.playable_count() == 188
    settings.GAME_IMAGES_DIR, settings.GAME_STARTER_PACK = "", "0"
    assert selectors.playable_count() == 0 and selectors.credits() == []
    assert GameImage.objects.filter(pack="starter").count() == 188  # kept, only not played


@pytest.mark.django_db
def test_a_damaged_pack_photo_is_refused_by_the_door(tmp_path):
    pack = tmp_path / "pack"
    (pack / "photos").mkdir(parents=True)
    data = json.loads((PACK / "manifest.json").read_text())
    data["photos"] = data["photos"][:2]
    for entry in data["photos"]:
        (pack / entry["file"]).write_bytes((PACK / entry["file"]).read_bytes())
    (pack / data["photos"][1]["file"]).write_bytes(b"RIFF" + (PACK / data["photos"][1]["file"]).read_bytes()[4:100])
    (pack / "manifest.json").write_text(json.dumps(data))
    report = starter.import_pack(pack_dir=pack)
    assert report.created == 1 and "differs from the manifest" in report.skipped[0][1]
    assert Path(pack / "manifest.json").is_file()

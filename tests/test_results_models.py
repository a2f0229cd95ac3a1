"""/models/: one model card per installed bundle and per published-answer opponent, accuracy on Im2GPS and Im2GPS3k,
curves against the paper's models and GeoCLIP, untrained bundles without a curve, and figures that are cached."""
import shutil

import pytest

from games.models import ModelGuess
from predictor import registry
from predictor.ml.bundle import MODEL_CARD
from results import published, services
from results.models import Snapshot
from tests.game_factories import MODEL, make_image

pytestmark = pytest.mark.django_db
BASE = "base(M, f*)"


@pytest.fixture
def published_dir(settings, shared_data):
    settings.PUBLISHED_RESULTS_DIR = str(shared_data / "geoestimation")
    return shared_data / "geoestimation"


def _opponents(*names):
    image = make_image(index=1, lat=48.85, lon=2.29, with_file=False)
    for name in names:
        ModelGuess.objects.create(image=image, model_name=name, lat=50.0, lon=2.29, distance_km=128.0)


def _row(html: str, dataset: str, slug: str) -> str:
    card = html[html.index(f'id="{slug}"'):]
    card = card[:card.index("</article>")]
    row = card[card.index(f'data-dataset="{dataset}"'):]
    return row[:row.index("</tr>")]


def test_published_figures_computed_from_the_files_match_the_papers_summary_rows(published_dir):
    computed = published.published_accuracy(published_dir)
    assert computed[MODEL]["Im2GPS"]["percent"] == [16.9, 43.0, 51.9, 66.7, 80.2]
    assert computed[MODEL]["Im2GPS3k"]["percent"] == [10.5, 28.0, 36.6, 49.7, 66.0]
    assert computed[BASE]["Im2GPS3k"]["images"] == 2997
    # The curve passes through the table's figures at the thresholds.
    curve = dict(zip(published.CURVE_KM, computed[MODEL]["Im2GPS"]["curve"]))
    assert round(curve[25.0], 1) == 43.0


def test_each_opponent_gets_a_card_with_every_section_and_its_accuracy(client, published_dir):
    _opponents(MODEL, BASE)
    response = client.get("/models/")
    assert response.status_code == 200
    html = response.content.decode()
    for section in ("Model details", "Intended uses", "Out-of-scope uses", "Bias, risks and limitations",
                    "Training data and procedure", "Evaluation"):
        assert html.count(f"<h3>{section}</h3>") == 2
    assert "must not be used to locate people" in html
    assert "lr 0.01, momentum 0.9, weight decay 1e-4" in html  # hyper-parameters
    isn = _row(html, "Im2GPS", "published-isns-m-f-s3")
    assert [c in isn for c in ("16.9", "43.0", "51.9", "66.7", "80.2", "237")] == [True] * 6
    base = _row(html, "Im2GPS3k", "published-base-m-f")
    assert [c in base for c in ("9.7", "27.0", "35.6", "49.1", "66.0", "2997")] == [True] * 6
    assert 'src="/models/chart/published-isns-m-f-s3-im2gps3k.svg"' in html


def test_the_curve_puts_the_model_the_papers_models_and_geoclip_on_one_chart(client, published_dir):
    _opponents(BASE)
    client.get("/models/")
    response = client.get("/models/chart/published-base-m-f-im2gps3k.svg")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("image/svg+xml")
    svg = response.content.decode()
    for label in ("base(M, f*)", "ISNs(M, f*, S3) (paper)", "base(M, f*) (paper)", "GeoCLIP (published)",
                  "distance to the true location (km)"):
        assert label.replace("&", "&amp;") in svg
    # Im2GPS has no GeoCLIP figure: its chart does not invent one.
    assert "GeoCLIP" not in client.get("/models/chart/published-base-m-f-im2gps.svg").content.decode()
    assert client.get("/models/chart/nothing.svg").status_code == 404


def test_without_the_files_the_papers_own_figures_are_shown_and_labelled(client, settings):
    settings.PUBLISHED_RESULTS_DIR = ""
    _opponents(MODEL)
    html = client.get("/models/").content.decode()
    assert "16.9" in _row(html, "Im2GPS", "published-isns-m-f-s3")
    assert "as published: Müller-Budack et al. 2018" in html


def test_an_untrained_bundle_is_shown_as_untrained_with_no_accuracy_and_no_curve(client, settings, tiny_bundle):
    settings.PUBLISHED_RESULTS_DIR = ""
    registry.install_bundle(tiny_bundle)
    html = client.get("/models/").content.decode()
    card = html[html.index('id="bundle-tiny-untrained"'):]
    card = card[:card.index("</article>")]
    assert "badge untrained" in card and "no accuracy and no curve" in card
    assert "<img" not in card and "<table" not in card
    assert "Model details" in card and "must not be used to locate people" in card
    assert not [name for name in Snapshot.objects.get(key="models").charts if "tiny" in name]


def test_a_trained_bundles_card_accuracy_becomes_its_table_and_curve(client, settings, tiny_trained_bundle):
    settings.PUBLISHED_RESULTS_DIR = ""
    target = registry.model_dir() / "measured"
    shutil.copytree(tiny_trained_bundle, target)
    card = (target / MODEL_CARD).read_text(encoding="utf-8")
    card = card.replace("## Measured accuracy\n\nnot measured: untrained",
                        "## Measured accuracy\n\n- Im2GPS3k (2997 images; serving protocol): 1 km: 3.0%, 25 km: 12.5%, "
                        "200 km: 20.0%, 750 km: 33.3%, 2500 km: 50.1%")
    assert "33.3%" in card
    (target / MODEL_CARD).write_text(card, encoding="utf-8")
    html = client.get("/models/").content.decode()
    row = _row(html, "Im2GPS3k", "bundle-measured")
    assert [c in row for c in ("3.0", "12.5", "20.0", "33.3", "50.1", "2997")] == [True] * 6
    svg = client.get("/models/chart/bundle-measured-im2gps3k.svg").content.decode()
    assert "measured" in svg and "GeoCLIP (published)" in svg


def test_the_figures_are_computed_once_not_per_request(client, published_dir, monkeypatch,
                                                       django_assert_max_num_queries):
    _opponents(MODEL)
    client.get("/models/")
    first = Snapshot.objects.get(key="models").computed_at

    def fail(*args, **kwargs):
        raise AssertionError("recomputed on a request")

    monkeypatch.setattr(published, "published_accuracy", fail)
    with django_assert_max_num_queries(6):
        assert client.get("/models/").status_code == 200
    assert Snapshot.objects.get(key="models").computed_at == first
    monkeypatch.undo()
    # A new opponent changes what the page is computed from: it is rebuilt once.
    ModelGuess.objects.create(image=ModelGuess.objects.get().image, model_name=BASE, lat=1, lon=1, distance_km=1)
    assert "published-base-m-f" in client.get("/models/").content.decode()
    assert Snapshot.objects.get(key="models").computed_at > first


def test_recompute_results_command_rebuilds_the_models_page(published_dir):
    from django.core.management import call_command

    _opponents(MODEL)
    call_command("recompute_results", "--only", "models")
    entries = Snapshot.objects.get(key="models").data["entries"]
    assert [e["name"] for e in entries] == [MODEL]
    assert services.MODELS_KEY == "models"


def test_evaluate_store_keeps_the_figures_with_the_bundle_and_models_shows_its_curve(client, settings, tmp_path,
                                                                                    tiny_trained_bundle):
    from django.core.management import call_command

    from tests.conftest import make_jpeg

    settings.PUBLISHED_RESULTS_DIR = ""
    registry.install_bundle(tiny_trained_bundle)
    client.get("/models/")  # cached before the evaluation: the stored figures must replace it
    images = tmp_path / "images"
    images.mkdir()
    meta = tmp_path / "im2gps3k_places365.csv"
    rows = [("a.jpg", 48.85, 2.35, 2), ("b.jpg", -33.9, 151.2, 1), ("c.jpg", 40.7, -74.0, 0)]
    meta.write_text("IMG_ID,AUTHOR,LAT,LON,S3_Label\n" + "".join(f"{i},x,{a},{b},{s}\n" for i, a, b, s in rows))
    for name, colour in zip(("a.jpg", "b.jpg", "c.jpg"), [(200, 30, 30), (30, 200, 30), (30, 30, 200)]):
        (images / name).write_bytes(make_jpeg(96, 64, colour))
    call_command("evaluate", "--meta", str(meta), "--images", str(images), "--model", "tiny-trained",
                 "--batch-size", "3", "--store", "--allow-overlap")
    stored = registry.model_dir() / "tiny-trained" / "evaluations" / "im2gps3k_places365.json"
    assert stored.is_file()
    from predictor.ml.kinds import verify_bundle

    verify_bundle(registry.model_dir() / "tiny-trained")  # the bundle still verifies with the figures beside it
    html = client.get("/models/").content.decode()
    row = _row(html, "Im2GPS3k", "bundle-tiny-trained")
    assert "<td>3</td>" in row  # three photos measured
    assert "measured by `evaluate` on 3 images" in html
    svg = client.get("/models/chart/bundle-tiny-trained-im2gps3k.svg").content.decode()
    assert "tiny-trained" in svg and "GeoCLIP (published)" in svg

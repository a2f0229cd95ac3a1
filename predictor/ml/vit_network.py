"""The multi-task vision transformer: a torchvision ViT body, one linear head per partitioning plus a scene head,
and optionally a second patch-embedding branch for a colour-coded semantic segmentation map (TransLocator style).

Input: [N, 3 + seg_channels, S, S]. The first three channels are the ImageNet-normalised photo; the others (when
`seg_channels` > 0) the segmentation colour map scaled to -1..1 (`predictor.ml.segmentation.seg_input`). Each
branch has its own patch embedding (a 16x16 stride-16 convolution); the two token grids are fused by summation,
patch by patch, before the shared transformer encoder ("sum" fusion). RGB-only networks have one branch.

Outputs: a list of logits, one per partitioning (coarse -> fine), then the scene logits last.

Attention rollout (Abnar & Zuidema 2020) gives the "where the model looked" map: the product over layers of the
head-averaged attention plus identity, read from the class token to each patch.

No weights are ever downloaded: `pretrained_path` loads a torchvision ImageNet ViT state dict from disk
(e.g. `vit_b_16-c867db91.pth`); the segmentation branch and the heads then start from random weights.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torchvision.models.vision_transformer import VisionTransformer

from .network import load_state_dict_file

# torchvision's ViT-B/16 configuration, DeiT's ViT-S/16 (6 heads of 64, width 384) and a tiny one for tests.
VIT_BACKBONES: dict[str, dict[str, int]] = {
    "vit_b_16": dict(patch_size=16, num_layers=12, num_heads=12, hidden_dim=768, mlp_dim=3072),
    "vit_s_16": dict(patch_size=16, num_layers=12, num_heads=6, hidden_dim=384, mlp_dim=1536),
    "vit_tiny": dict(patch_size=16, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64),
}
FUSIONS = ("sum",)
SCENE_CLASS_COUNTS = (3, 16, 365)


def is_vit(backbone: str) -> bool:
    return backbone in VIT_BACKBONES


class ViTGeoNetwork(nn.Module):
    """ViT body -> class token -> one head per partitioning and a scene head."""

    def __init__(self, backbone: str = "vit_b_16", num_classes: list[int] | tuple[int, ...] = (3298, 7202, 12893),
                 *, scene_classes: int = 3, seg_channels: int = 0, image_size: int = 224, fusion: str = "sum",
                 pretrained_path: str | Path | None = None):
        super().__init__()
        if backbone not in VIT_BACKBONES:
            raise ValueError(f"unknown ViT backbone {backbone!r}; choose one of {', '.join(VIT_BACKBONES)}")
        if scene_classes not in SCENE_CLASS_COUNTS:
            raise ValueError(f"the scene head has 3, 16 or 365 classes, not {scene_classes}")
        if seg_channels < 0:
            raise ValueError("seg_channels must be 0 (RGB only) or the segmentation map's channel count")
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, not {fusion!r}")
        num_classes = [int(n) for n in num_classes]
        if not num_classes or min(num_classes) < 1:
            raise ValueError("num_classes must list at least one positive class count per partitioning")
        spec = VIT_BACKBONES[backbone]
        self.backbone, self.num_classes = backbone, num_classes
        self.scene_classes, self.seg_channels, self.image_size, self.fusion = (int(scene_classes), int(seg_channels),
                                                                              int(image_size), fusion)
        self.patch_size = spec["patch_size"]
        self.vit = VisionTransformer(image_size=image_size, **spec)
        if pretrained_path is not None:
            state = load_state_dict_file(pretrained_path)
            missing, unexpected = self.vit.load_state_dict(state, strict=False)
            problems = [k for k in missing if not k.startswith("heads.")] + [k for k in unexpected
                                                                              if not k.startswith("heads.")]
            if problems:
                raise ValueError(f"{pretrained_path}: not a torchvision {backbone} state dict at {image_size} px "
                                 f"(mismatched keys, e.g. {problems[:3]})")
        self.vit.heads = nn.Identity()  # the ImageNet classifier is not used
        self.feature_dim = spec["hidden_dim"]
        self.seg_proj = (nn.Conv2d(seg_channels, self.feature_dim, self.patch_size, self.patch_size)
                         if seg_channels else None)
        self.heads = nn.ModuleList(nn.Linear(self.feature_dim, n) for n in num_classes)
        self.scene_head = nn.Linear(self.feature_dim, self.scene_classes)

    @property
    def in_channels(self) -> int:
        return 3 + self.seg_channels

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size

    def _tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Patch tokens of both branches, fused, with the class token in front: [N, 1 + h*w, D]."""
        if x.shape[1] != self.in_channels or x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            raise ValueError(f"this network takes [N, {self.in_channels}, {self.image_size}, {self.image_size}] "
                             f"inputs, got {list(x.shape)}")
        tokens = self.vit.conv_proj(x[:, :3])
        if self.seg_proj is not None:
            tokens = tokens + self.seg_proj(x[:, 3:])
        tokens = tokens.flatten(2).transpose(1, 2)
        return torch.cat([self.vit.class_token.expand(x.shape[0], -1, -1), tokens], dim=1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The class token after the encoder, [N, D]."""
        return self.vit.encoder(self._tokens(x))[:, 0]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = self.features(x)
        return [head(features) for head in self.heads] + [self.scene_head(features)]

    @torch.no_grad()
    def attention_rollout(self, x: torch.Tensor, *, residual: float = 0.5) -> torch.Tensor:
        """[N, grid, grid] in 0..1: how much the class token draws from each patch, through every layer."""
        encoder = self.vit.encoder
        tokens = self._tokens(x) + encoder.pos_embedding
        count = tokens.shape[1]
        eye = torch.eye(count, device=x.device, dtype=torch.float32)
        joint = eye.expand(x.shape[0], count, count)
        for block in encoder.layers:
            y = block.ln_1(tokens)
            y, weights = block.self_attention(y, y, y, need_weights=True, average_attn_weights=True)
            tokens = tokens + y
            tokens = tokens + block.mlp(block.ln_2(tokens))
            step = residual * eye + (1 - residual) * weights.float()
            joint = (step / step.sum(dim=-1, keepdim=True)) @ joint
        relevance = joint[:, 0, 1:].reshape(x.shape[0], self.grid, self.grid)
        low = relevance.amin(dim=(1, 2), keepdim=True)
        high = relevance.amax(dim=(1, 2), keepdim=True)
        return (relevance - low) / (high - low).clamp_min(1e-12)

    def describe(self) -> dict:
        return {"backbone": self.backbone, "num_classes": self.num_classes, "scene_classes": self.scene_classes,
                "seg_channels": self.seg_channels, "image_size": self.image_size, "fusion": self.fusion}


def network_from_description(description: dict) -> ViTGeoNetwork:
    return ViTGeoNetwork(description["backbone"], [int(n) for n in description["num_classes"]],
                         scene_classes=int(description["scene_classes"]),
                         seg_channels=int(description.get("seg_channels", 0)),
                         image_size=int(description.get("image_size", 224)),
                         fusion=description.get("fusion", "sum"))

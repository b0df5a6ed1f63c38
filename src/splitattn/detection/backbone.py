"""ResNeSt-FPN: C2–C5 of any zoo model → P2–P6 with torchvision's FeaturePyramidNetwork.

As detectron2's ResNeSt configs (paper-facts §8.1): FPN on res2–res5 with a max-pooled P6, the stem
and stage 1 frozen (``FREEZE_AT=2``: weights fixed and their BatchNorms turned into frozen affine
maps), and a norm choice for everything trainable.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool

from ..layers.norm import FrozenBatchNorm2d
from ..models import create_model
from ..models.resnest import ResNeStFeatures

# Backbone norms a detector can use ("syncbn": splitattn.layers.SyncBatchNorm, synchronised under torchrun)
BACKBONE_NORMS = ("frozenbn", "bn", "syncbn", "gn")


def _freeze_batchnorm(module: nn.Module) -> nn.Module:
    """BatchNorm2d children (recursively) → FrozenBatchNorm2d with the same statistics and affine."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
            with torch.no_grad():
                if child.affine:
                    frozen.weight.copy_(child.weight)
                    frozen.bias.copy_(child.bias)
                if child.track_running_stats:
                    frozen.running_mean.copy_(child.running_mean)
                    frozen.running_var.copy_(child.running_var)
            setattr(module, name, frozen)
        else:
            _freeze_batchnorm(child)
    return module


def freeze_stages(body: ResNeStFeatures, freeze_at: int) -> None:
    """detectron2's ``FREEZE_AT``: 0 nothing, 1 the stem, 2 the stem and layer1 (res2), … 5 everything."""
    if not 0 <= freeze_at <= 5:
        raise ValueError(f"freeze_at must be 0..5 (0 = train all, 2 = stem + res2 as detectron2), got {freeze_at}")
    if freeze_at >= 1:
        body.conv1.requires_grad_(False)
        body.bn1.requires_grad_(False)
        _freeze_batchnorm(body.conv1)
        if isinstance(body.bn1, nn.BatchNorm2d):
            body.bn1 = _freeze_batchnorm(nn.Sequential(body.bn1))[0]
    for index in range(1, freeze_at):
        stage = getattr(body, f"layer{index}")
        stage.requires_grad_(False)
        _freeze_batchnorm(stage)


class ResNeStFPN(nn.Module):
    """Backbone returning ``OrderedDict`` ``{'0': P2, '1': P3, '2': P4, '3': P5, 'pool': P6}``.

    ``out_channels`` is the FPN width (256 in the paper); ``body`` keeps the official key layout under
    ``body.*`` so ImageNet checkpoints load into it directly.
    """

    def __init__(self, body: ResNeStFeatures, out_channels: int = 256, fpn_norm: type[nn.Module] | None = None):
        super().__init__()
        if list(body.out_indices) != [1, 2, 3, 4]:
            raise ValueError(f"the FPN body must return C2..C5 (out_indices 1..4), got {body.out_indices}")
        self.body = body
        self.fpn = FeaturePyramidNetwork([info["num_chs"] for info in body.feature_info], out_channels,
                                         extra_blocks=LastLevelMaxPool(), norm_layer=fpn_norm)
        self.out_channels = out_channels
        self.strides = [info["reduction"] for info in body.feature_info] + [body.feature_info[-1]["reduction"] * 2]

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.body(x)
        return self.fpn(OrderedDict((str(i), f) for i, f in enumerate(features)))


def build_backbone(name: str = "resnest50", pretrained: bool | str = False, norm: str = "syncbn",
                   freeze_at: int = 2, out_channels: int = 256, fpn_norm: type[nn.Module] | None = None,
                   progress: bool = True, **overrides) -> ResNeStFPN:
    """A zoo model's C2–C5 with FPN. ``overrides`` go to :func:`splitattn.create_model` (e.g. ``base_planes``)."""
    if norm not in BACKBONE_NORMS:
        raise ValueError(f"unknown backbone norm {norm!r}: use one of {', '.join(BACKBONE_NORMS)}")
    if "norm_layer" in overrides or "num_classes" in overrides:
        raise ValueError("set the backbone norm with norm=..., not norm_layer; a detection backbone has no classifier")
    body = create_model(name, pretrained=pretrained, features_only=True, out_indices=(1, 2, 3, 4), progress=progress,
                        norm_layer=norm, **overrides)
    freeze_stages(body, freeze_at)
    return ResNeStFPN(body, out_channels, fpn_norm)

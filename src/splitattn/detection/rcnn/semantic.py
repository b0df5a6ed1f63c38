"""Panoptic FPN's semantic branch: detectron2's ``SemSegFPNHead`` under its module names.

Source: facebookresearch/detectron2 ``detectron2/modeling/meta_arch/semantic_seg.py`` (``SemSegFPNHead``) and
``detectron2/modeling/postprocessing.py`` (``sem_seg_postprocess``); Kirillov et al., "Panoptic Feature Pyramid
Networks" (arXiv 1901.02446), §3. Each FPN level P2–P5 goes through ``max(1, log2(stride / 4))`` 3×3
conv-norm-ReLU layers, each followed by a 2× bilinear upsampling unless the level is already at stride 4; the
four stride-4 maps are summed and a 1×1 ``predictor`` gives the class logits, upsampled 4× (bilinear).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .heads import ConvNormReLU, msra_fill

IGNORE_VALUE = 255  # detectron2's SEM_SEG_HEAD.IGNORE_VALUE


class SemSegFPNHead(nn.Module):
    """``p2``…``p5`` (Sequentials of ConvNormReLU and ``nn.Upsample``) and ``predictor``: detectron2's keys.

    ``num_classes`` is detectron2's COCO "separated" count by default: 53 stuff classes + one class 0 for all
    things (``SEM_SEG_HEAD.NUM_CLASSES`` 54).
    """

    def __init__(self, in_channels: int = 256, strides: Sequence[int] = (4, 8, 16, 32), num_classes: int = 54,
                 conv_dim: int = 128, common_stride: int = 4, norm: str = "gn", loss_weight: float = 1.0,
                 ignore_value: int = IGNORE_VALUE):
        super().__init__()
        if num_classes < 2 or conv_dim < 1 or common_stride < 1:
            raise ValueError(f"the semantic head needs num_classes >= 2 (COCO: 54 = 53 stuff + things) and positive "
                             f"widths, got {num_classes}, {conv_dim}, {common_stride}")
        self.common_stride, self.loss_weight, self.ignore_value = common_stride, loss_weight, ignore_value
        self.in_features = [f"p{int(math.log2(s))}" for s in strides]
        for name, stride in zip(self.in_features, strides):
            layers: list[nn.Module] = []
            for k in range(max(1, int(math.log2(stride) - math.log2(common_stride)))):
                conv = ConvNormReLU(in_channels if k == 0 else conv_dim, conv_dim, norm)
                msra_fill(conv)
                layers.append(conv)
                if stride != common_stride:
                    layers.append(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False))
            self.add_module(name, nn.Sequential(*layers))
        self.predictor = nn.Conv2d(conv_dim, num_classes, 1)
        msra_fill(self.predictor)

    def layers(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """Logits at the common stride from P2..P5 (finest first)."""
        x = None
        for name, feature in zip(self.in_features, features):
            y = getattr(self, name)(feature)
            x = y if x is None else x + y
        return self.predictor(x)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """Logits at the padded input's resolution (the common stride upsampled away)."""
        return F.interpolate(self.layers(features), scale_factor=self.common_stride, mode="bilinear",
                             align_corners=False)

    def losses(self, features: Sequence[torch.Tensor], targets: torch.Tensor) -> dict[str, torch.Tensor]:
        """``loss_sem_seg``: mean cross-entropy over non-ignored pixels, times ``loss_weight``."""
        logits = self(features).float()
        loss = F.cross_entropy(logits, targets, reduction="mean", ignore_index=self.ignore_value)
        return {"loss_sem_seg": loss * self.loss_weight}


def sem_seg_postprocess(logits: torch.Tensor, size: tuple[int, int], height: int, width: int) -> torch.Tensor:
    """(C, H_pad, W_pad) logits → the resized image's region, bilinearly resized to (C, height, width)."""
    region = logits[:, : size[0], : size[1]][None]
    return F.interpolate(region, size=(height, width), mode="bilinear", align_corners=False)[0]

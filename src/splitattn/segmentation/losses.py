"""The segmentation loss of the paper's runs: per-pixel cross-entropy with the auxiliary head's term."""

from __future__ import annotations

import torch
import torch.nn.functional as F

AUX_WEIGHT = 0.2  # PyTorch-Encoding's aux loss weight for the ResNeSt runs


def segmentation_loss(outputs: dict[str, torch.Tensor], target: torch.Tensor, ignore_index: int = 255,
                      aux_weight: float = AUX_WEIGHT) -> torch.Tensor:
    """Per-pixel cross-entropy on ``out`` plus ``aux_weight`` × that of ``aux`` (ignored pixels skipped)."""
    loss = F.cross_entropy(outputs["out"], target, ignore_index=ignore_index)
    if "aux" in outputs:
        loss = loss + aux_weight * F.cross_entropy(outputs["aux"], target, ignore_index=ignore_index)
    return loss

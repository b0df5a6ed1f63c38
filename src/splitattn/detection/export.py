"""Export a detector's ResNeSt-FPN backbone (the part that carries the paper's contribution) to ONNX or
TorchScript. The RPN / RoI heads stay in PyTorch: their data-dependent box logic is torchvision's."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..export import export_model
from .backbone import ResNeStFPN


class FPNOutputs(nn.Module):
    """The FPN levels P2..P6 as a list (ONNX and TorchScript want tensors, not an ordered dict)."""

    def __init__(self, backbone: ResNeStFPN):
        super().__init__()
        self.backbone = backbone
        self.in_chans = backbone.body.in_chans

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(self.backbone(x).values())


def export_backbone(model: nn.Module, path: str | Path, fmt: str = "onnx", image_size: int = 256,
                    opset: int = 18) -> Path:
    """Write the backbone of ``model`` (a detector from :func:`create_detector` or a :class:`ResNeStFPN`)."""
    backbone = getattr(model, "backbone", model)
    if not isinstance(backbone, ResNeStFPN):
        raise TypeError(f"expected a splitattn detector or ResNeStFPN, got {type(model).__name__}")
    return export_model(FPNOutputs(backbone).eval(), path, fmt, image_size, opset)

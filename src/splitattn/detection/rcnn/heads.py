"""detectron2's RoI heads' layers, under detectron2's module names so its checkpoints load by name.

Source: facebookresearch/detectron2 ``detectron2/layers/wrappers.py`` (``Conv2d`` with a ``norm`` child),
``detectron2/modeling/roi_heads/box_head.py`` (``FastRCNNConvFCHead``), ``fast_rcnn.py``
(``FastRCNNOutputLayers``: background is the *last* class) and ``mask_head.py``
(``MaskRCNNConvUpsampleHead``). Initialisation follows theirs (fvcore's c2_msra / c2_xavier fills).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..heads import head_norm_layer


def msra_fill(module: nn.Module) -> None:
    """fvcore ``c2_msra_fill``: He normal (fan out, ReLU), zero bias."""
    nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
    if module.bias is not None:
        nn.init.constant_(module.bias, 0)


def xavier_fill(module: nn.Module) -> None:
    """fvcore ``c2_xavier_fill``: He uniform with a = 1 (Caffe2's XavierFill), zero bias."""
    nn.init.kaiming_uniform_(module.weight, a=1)
    if module.bias is not None:
        nn.init.constant_(module.bias, 0)


class ConvNormReLU(nn.Conv2d):
    """3×3 conv (no bias when normalised), its norm as child ``norm``, then ReLU: detectron2's ``Conv2d``."""

    def __init__(self, in_channels: int, out_channels: int, norm: str = "none"):
        super().__init__(in_channels, out_channels, 3, padding=1, bias=norm == "none")
        layer = head_norm_layer(norm)
        self.norm = layer(out_channels) if layer is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = super().forward(x)
        return F.relu(self.norm(x) if self.norm is not None else x)


class ConvFCBoxHead(nn.Module):
    """``FastRCNNConvFCHead``: ``num_conv`` ConvNormReLU (conv1…), flatten, ``num_fc`` Linear+ReLU (fc1…).

    The paper's box head is 4conv1fc with SyncBN; detectron2's default is 0conv2fc.
    """

    def __init__(self, channels: int = 256, resolution: int = 7, num_conv: int = 4, conv_dim: int = 256,
                 num_fc: int = 1, fc_dim: int = 1024, norm: str = "none"):
        super().__init__()
        if num_conv + num_fc == 0:
            raise ValueError("a box head needs at least one conv or fc layer")
        self.num_conv, self.num_fc = num_conv, num_fc
        for k in range(num_conv):
            conv = ConvNormReLU(channels if k == 0 else conv_dim, conv_dim, norm)
            msra_fill(conv)
            self.add_module(f"conv{k + 1}", conv)
        width = (conv_dim if num_conv else channels) * resolution**2
        for k in range(num_fc):
            fc = nn.Linear(width if k == 0 else fc_dim, fc_dim)
            xavier_fill(fc)
            self.add_module(f"fc{k + 1}", fc)
        self.out_features = fc_dim if num_fc else width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for k in range(self.num_conv):
            x = getattr(self, f"conv{k + 1}")(x)
        if self.num_fc:
            x = torch.flatten(x, 1)
            for k in range(self.num_fc):
                x = F.relu(getattr(self, f"fc{k + 1}")(x))
        return x


class BoxPredictor(nn.Module):
    """``FastRCNNOutputLayers``: ``cls_score`` (C + 1 logits, background last) and ``bbox_pred`` (4C or 4)."""

    def __init__(self, in_features: int, num_classes: int, class_agnostic: bool = False):
        super().__init__()
        self.num_classes = num_classes
        self.cls_score = nn.Linear(in_features, num_classes + 1)
        self.bbox_pred = nn.Linear(in_features, 4 if class_agnostic else 4 * num_classes)
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        for layer in (self.cls_score, self.bbox_pred):
            nn.init.constant_(layer.bias, 0)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.flatten(x, 1)
        return self.cls_score(x), self.bbox_pred(x)


class MaskHead(nn.Module):
    """``MaskRCNNConvUpsampleHead``: ``num_conv`` ConvNormReLU (mask_fcn1…), 2× ``deconv`` + ReLU, 1×1 ``predictor``.

    One mask logit map per class (class-specific, as the paper's configs).
    """

    def __init__(self, channels: int, num_classes: int, num_conv: int = 4, conv_dim: int = 256,
                 norm: str = "none"):
        super().__init__()
        self.num_conv = num_conv
        for k in range(num_conv):
            conv = ConvNormReLU(channels if k == 0 else conv_dim, conv_dim, norm)
            msra_fill(conv)
            self.add_module(f"mask_fcn{k + 1}", conv)
        width = conv_dim if num_conv else channels
        self.deconv = nn.ConvTranspose2d(width, conv_dim, 2, stride=2)
        msra_fill(self.deconv)
        self.predictor = nn.Conv2d(conv_dim, num_classes, 1)
        nn.init.normal_(self.predictor.weight, std=0.001)
        nn.init.constant_(self.predictor.bias, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for k in range(self.num_conv):
            x = getattr(self, f"mask_fcn{k + 1}")(x)
        return self.predictor(F.relu(self.deconv(x)))

"""RoI box and mask heads: torchvision's modules, configured as detectron2's ResNeSt configs.

``"4conv1fc"`` is detectron2's ``FastRCNNConvFCHead`` with NUM_CONV 4, NUM_FC 1 and a norm (the
paper's box head); ``"2fc"`` the plain two-layer MLP head of torchvision / detectron2 defaults.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn
from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads

from ..layers import SyncBatchNorm, group_norm

BOX_HEADS = ("4conv1fc", "2fc")
HEAD_NORMS = ("none", "bn", "syncbn", "gn")


def head_norm_layer(norm: str) -> Callable[[int], nn.Module] | None:
    """Norm for FPN and heads: BatchNorm, synchronised BatchNorm, GroupNorm(32) or none."""
    if norm not in HEAD_NORMS:
        raise ValueError(f"unknown head norm {norm!r}: use one of {', '.join(HEAD_NORMS)}")
    return {"none": None, "bn": nn.BatchNorm2d, "syncbn": SyncBatchNorm, "gn": group_norm}[norm]


def box_head(kind: str, in_channels: int, resolution: int = 7, conv_dim: int = 256, fc_dim: int = 1024,
             norm: str = "none") -> tuple[nn.Module, int]:
    """(head, output width) for ``kind`` in :data:`BOX_HEADS`."""
    if kind == "4conv1fc":
        head = FastRCNNConvFCHead((in_channels, resolution, resolution), [conv_dim] * 4, [fc_dim],
                                  norm_layer=head_norm_layer(norm))
    elif kind == "2fc":
        head = TwoMLPHead(in_channels * resolution**2, fc_dim)
    else:
        raise ValueError(f"unknown box head {kind!r}: use one of {', '.join(BOX_HEADS)}")
    return head, fc_dim


def mask_head(in_channels: int, conv_dim: int = 256, num_convs: int = 4, norm: str = "none") -> MaskRCNNHeads:
    """detectron2's ``MaskRCNNConvUpsampleHead`` body: ``num_convs`` 3×3 convs (the predictor upsamples)."""
    return MaskRCNNHeads(in_channels, [conv_dim] * num_convs, 1, norm_layer=head_norm_layer(norm))

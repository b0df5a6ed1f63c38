"""Normalisation choices for the backbone.

The released models use plain BatchNorm everywhere, including *inside* split attention on a
1×1 pooled map. That BN needs several samples per device (ResNeSt issues #46, #146), so
small-batch users need SyncBN, frozen BN (detection fine-tuning) or GroupNorm (no batch statistics).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn
from torchvision import ops

from .split_attention import SplitAttention
from .sync_batchnorm import SyncBatchNorm, distributed_world

NormLayer = Callable[[int], nn.Module]


class FrozenBatchNorm2d(ops.FrozenBatchNorm2d):
    """torchvision's frozen BatchNorm (same buffers and checkpoints), run as one fused ``batch_norm`` call.

    torchvision's forward takes a multiply and an add pass over the activation; at detection resolutions the
    frozen stem and res2 made a ResNeSt-50 backbone ~20 % slower on the CPU than detectron2's (which fuses).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)


def group_norm(num_channels: int, num_groups: int = 32, eps: float = 1e-5) -> nn.GroupNorm:
    """GroupNorm with up to ``num_groups`` groups: the largest divisor of both (e.g. 80 channels -> 16)."""
    return nn.GroupNorm(math.gcd(num_groups, num_channels), num_channels, eps=eps)


NORM_LAYERS: dict[str, NormLayer] = {
    "bn": nn.BatchNorm2d,
    "syncbn": SyncBatchNorm,  # synchronised under torchrun, on CPU and GPU (sync_batchnorm.py)
    "frozenbn": partial(FrozenBatchNorm2d, eps=1e-5),
    "gn": group_norm,
}


def get_norm_layer(norm: str | NormLayer) -> NormLayer:
    """Resolve ``'bn' | 'syncbn' | 'frozenbn' | 'gn'`` or pass a ``channels -> Module`` callable through."""
    if callable(norm):
        return norm
    try:
        return NORM_LAYERS[norm.lower()]
    except (KeyError, AttributeError):
        raise ValueError(
            f"unknown norm_layer {norm!r}: use one of {sorted(NORM_LAYERS)} or a callable taking the channel count"
        ) from None


def pooled_norm_layer(norm: str | NormLayer) -> NormLayer:
    """Norm for split attention's globally pooled 1×1 map.

    GroupNorm with 32 groups would normalise a single value per group there (its output is just β,
    so the attention would ignore its input); one group (a LayerNorm over the attention channels)
    keeps the signal and needs no batch statistics. Every other choice is used unchanged.
    """
    resolved = get_norm_layer(norm)
    return partial(nn.GroupNorm, 1) if resolved is group_norm else resolved


def uses_batch_statistics(module: nn.Module) -> bool:
    """True when ``module`` normalises with this process's batch statistics alone (BN in train mode;
    synchronised BN counts only when it is not actually synchronising over several processes)."""
    if not (isinstance(module, nn.modules.batchnorm._BatchNorm) and module.training):
        return False
    return not (isinstance(module, (nn.SyncBatchNorm, SyncBatchNorm)) and distributed_world() > 1)


def needs_two_samples(model: nn.Module) -> bool:
    """True when training ``model`` on one sample per process fails: split attention normalises a globally
    pooled 1×1 map, so its BatchNorm sees one value per channel (plain BN on larger maps copes)."""
    return any(uses_batch_statistics(m.bn1) for m in model.modules() if isinstance(m, SplitAttention))

"""Global pooling before the classifier, with timm's ``global_pool`` names (``timm/layers/adaptive_avgmax_pool.py``)."""

from __future__ import annotations

import torch
from torch import nn

POOL_TYPES = ("avg", "max", "avgmax", "")


class GlobalPool(nn.Module):
    """'avg' (the official mean over H, W), 'max', 'avgmax' (their mean, as timm) or '' (no pooling: the map)."""

    def __init__(self, pool_type: str = "avg"):
        super().__init__()
        if pool_type not in POOL_TYPES:
            raise ValueError(f"global_pool must be one of {POOL_TYPES}, got {pool_type!r}")
        self.pool_type = pool_type

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool_type == "avg":
            return x.mean((2, 3))  # as the released models: bit-exact logits
        if self.pool_type == "max":
            return x.amax((2, 3))
        if self.pool_type == "avgmax":
            return 0.5 * (x.mean((2, 3)) + x.amax((2, 3)))
        return x

    def extra_repr(self) -> str:
        return f"pool_type={self.pool_type!r}"

"""DropBlock as the released ResNeSt weights were trained.

Ghiasi et al., "DropBlock: A regularization method for convolutional networks", NeurIPS 2018.
The ResNeSt ImageNet weights were trained with the MXNet Gluon implementation
(zhanghang1989/ResNeSt ``resnest/gluon/dropblock.py``; the official torch class is a stub that
raises): block size 3, **one mask of shape (1, C, H, W) shared by the whole batch**, seed rate
``gamma = p·H·W / (bs² · (H−bs+1)(W−bs+1))``, blocks grown by a stride-1 max-pool, output
rescaled by ``numel / kept``. The probability is meant to change during training (the recipe ramps
it 0 → 0.1), so it is a plain attribute: see :func:`set_drop_block_prob`.
"""

from __future__ import annotations

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn


class DropBlock2D(nn.Module):
    """Drop contiguous ``block_size``² regions of every channel, one mask for the batch."""

    def __init__(self, drop_prob: float = 0.0, block_size: int = 3):
        super().__init__()
        if not 0.0 <= drop_prob < 1.0:
            raise ValueError(f"drop_prob must be in [0, 1), got {drop_prob}")
        self.drop_prob = float(drop_prob)
        self.block_size = int(block_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.drop_prob <= 0.0:
            return x
        return x * _keep_mask(x, self.drop_prob, self.block_size)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}, block_size={self.block_size}"


@torch.fx.wrap
def _keep_mask(x: torch.Tensor, drop_prob: float, block_size: int) -> torch.Tensor:
    """The (1, C, H, W) keep mask, rescaled; one leaf call under ``torch.fx`` (it sizes the blocks from H, W)."""
    channels, height, width = x.shape[1], x.shape[2], x.shape[3]
    block = min(block_size, height, width)  # maps smaller than a block: drop whole maps
    gamma = drop_prob * height * width / (block**2 * (height - block + 1) * (width - block + 1))
    seeds = (torch.rand((1, channels, height, width), device=x.device) < gamma).to(x.dtype)
    # Gluon pads (bs-1)//2 before and the rest after, so even block sizes grow down-right.
    pad = block - 1
    seeds = F.pad(seeds, (pad // 2, pad - pad // 2, pad // 2, pad - pad // 2))
    keep = 1.0 - F.max_pool2d(seeds, kernel_size=block, stride=1)
    return keep * (keep.numel() / keep.sum().clamp(min=1.0))


def set_drop_block_prob(model: nn.Module, drop_prob: float) -> int:
    """Set the probability of every :class:`DropBlock2D` in ``model`` (call it each step or epoch).

    Returns the number of DropBlock sites updated, so a caller can check the model has any.
    """
    count = 0
    for module in model.modules():
        if isinstance(module, DropBlock2D):
            if not 0.0 <= drop_prob < 1.0:
                raise ValueError(f"drop_prob must be in [0, 1), got {drop_prob}")
            module.drop_prob = float(drop_prob)
            count += 1
    return count

"""Inference forms of the stem, the bottleneck and split attention, built from trained modules."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from ..layers import SplitAttention
from ..models.resnest import Bottleneck
from .fused_conv import ConvAct


class DeployError(ValueError):
    """The model cannot be turned into its inference form as it is."""


def norm_affine(norm: nn.Module) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(scale, shift) with ``norm(y) = y·scale + shift`` per channel, or None when it depends on the input."""
    if isinstance(norm, nn.modules.batchnorm._BatchNorm):
        if norm.running_mean is None:
            return None  # track_running_stats=False: batch statistics even in eval
        weight = norm.weight.detach().double() if norm.affine else torch.ones_like(norm.running_mean)
        bias = norm.bias.detach().double() if norm.affine else torch.zeros_like(norm.running_mean)
        scale = weight / torch.sqrt(norm.running_var.double() + norm.eps)
        return scale, bias - norm.running_mean.double() * scale
    if isinstance(norm, FrozenBatchNorm2d):
        scale = norm.weight.double() * torch.rsqrt(norm.running_var.double() + norm.eps)
        return scale, norm.bias.double() - norm.running_mean.double() * scale
    return None  # GroupNorm and the like: statistics of each input


def fold(conv: nn.Conv2d, norm: nn.Module, relu: bool) -> ConvAct:
    """conv → norm (→ ReLU) as one :class:`ConvAct`; a norm that cannot be folded stays inside it."""
    affine = norm_affine(norm)
    if affine is not None:
        return ConvAct.from_conv(conv, *affine, relu=relu)
    keep = None if isinstance(norm, nn.Identity) else norm
    return ConvAct.from_conv(conv, None, None, relu=relu, norm=keep)


def _dense_from_grouped(conv: nn.Conv2d) -> torch.Tensor:
    """A grouped 1×1 conv's weight as a dense (out, in) matrix (block diagonal): tiny, and one matmul."""
    out_ch, in_per_group = conv.weight.shape[:2]
    groups = conv.groups
    dense = torch.zeros(out_ch, in_per_group * groups, dtype=conv.weight.dtype, device=conv.weight.device)
    step = out_ch // groups
    for g in range(groups):
        dense[g * step:(g + 1) * step, g * in_per_group:(g + 1) * in_per_group] = conv.weight[
            g * step:(g + 1) * step, :, 0, 0].detach()
    return dense


class DeploySplitAttention(nn.Module):
    """Split attention in three passes over the feature map: the fused conv, one pool, one weighted sum.

    The pooled vector is averaged before the splits are summed (same value, one pass fewer than the
    official sum-then-pool), fc1+bn1 is one matrix, and fc2's rows are re-ordered so its output is
    radix-major already (no transpose before the softmax).
    """

    def __init__(self, module: SplitAttention):
        super().__init__()
        self.radix, self.channels = module.radix, module.channels
        self.conv = fold(module.conv, module.bn0, relu=True)
        weight1 = _dense_from_grouped(module.fc1).double()
        bias1 = module.fc1.bias.detach().double()
        affine = norm_affine(module.bn1)
        self.attn_norm = nn.Identity()
        if affine is not None:
            weight1, bias1 = weight1 * affine[0][:, None], bias1 * affine[0] + affine[1]
        elif not isinstance(module.bn1, nn.Identity):
            self.attn_norm = module.bn1  # e.g. GroupNorm(1): per sample, applied on the (B, inter) vector
        weight2 = _dense_from_grouped(module.fc2).double()
        bias2 = module.fc2.bias.detach().double()
        cardinality = module.rsoftmax.cardinality
        if self.radix > 1:
            # fc2 emits (K, R, C/K) per sample; re-order its rows to (R, K, C/K)
            order = torch.arange(weight2.shape[0], device=weight2.device)
            order = order.reshape(cardinality, self.radix, -1).transpose(0, 1).reshape(-1)
            weight2, bias2 = weight2[order], bias2[order]
        dtype = module.conv.weight.dtype
        self.fc1_weight = nn.Parameter(weight1.to(dtype), requires_grad=False)
        self.fc1_bias = nn.Parameter(bias1.to(dtype), requires_grad=False)
        self.fc2_weight = nn.Parameter(weight2.to(dtype), requires_grad=False)
        self.fc2_bias = nn.Parameter(bias2.to(dtype), requires_grad=False)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """Per-sample channel weights, (B, R, C) — softmax over R (sigmoid for R = 1)."""
        batch = x.shape[0]
        gap = x.mean((2, 3))
        if self.radix > 1:
            gap = gap.reshape(batch, self.radix, self.channels).sum(1)
        hidden = F.linear(gap, self.fc1_weight.to(x.dtype), self.fc1_bias.to(x.dtype))
        if not isinstance(self.attn_norm, nn.Identity):
            hidden = self.attn_norm(hidden.reshape(batch, -1, 1, 1)).reshape(batch, -1)
        logits = F.linear(F.relu(hidden), self.fc2_weight.to(x.dtype), self.fc2_bias.to(x.dtype))
        logits = logits.reshape(batch, self.radix, self.channels)
        return logits.softmax(1) if self.radix > 1 else torch.sigmoid(logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        attn = self.attention(x)
        batch = x.shape[0]
        if self.radix == 1:
            return x * attn.reshape(batch, self.channels, 1, 1)
        # Σ_r a_r·x_r: the first product allocates the output, the others accumulate into it in place
        out = x[:, :self.channels] * attn[:, 0].reshape(batch, self.channels, 1, 1)
        for r in range(1, self.radix):
            split = x[:, r * self.channels:(r + 1) * self.channels]
            out.addcmul_(split, attn[:, r].reshape(batch, self.channels, 1, 1))
        return out


class DeployBottleneck(nn.Module):
    """The bottleneck with every norm folded, ReLUs fused, and the residual add fused into conv3."""

    def __init__(self, block: Bottleneck):
        super().__init__()
        self.conv1 = fold(block.conv1, block.bn1, relu=True)
        self.avd_pre = block.avd_pre
        if isinstance(block.conv2, SplitAttention):
            self.conv2 = DeploySplitAttention(block.conv2)
        else:
            self.conv2 = fold(block.conv2, block.bn2, relu=True)
        self.avd_post = block.avd_post
        self.conv3 = fold(block.conv3, block.bn3, relu=True)
        if isinstance(block.downsample, nn.Sequential):
            pool, conv, norm = block.downsample
            self.pool = pool
            self.shortcut = fold(conv, norm, relu=False)
        else:
            self.pool, self.shortcut = nn.Identity(), None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.shortcut(self.pool(x)) if self.shortcut is not None else x
        out = self.avd_post(self.conv2(self.avd_pre(self.conv1(x))))
        return self.conv3(out, shortcut)

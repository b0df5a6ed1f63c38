"""Split-Attention convolution: the one new block of ResNeSt.

Paper: Zhang et al., "ResNeSt: Split-Attention Networks", arXiv 2004.08955, §3 (eqs. 1-4).
Written from the paper's equations and laid out as the official code (zhanghang1989/ResNeSt,
``resnest/torch/splat.py``) so that its checkpoints load unchanged:

* channels are **radix-major**: the 3×3 output channel ``r·C + k·C/K + c`` holds split ``r`` of
  cardinal group ``k``. The R splits are therefore contiguous chunks of C channels, summing them
  fuses every cardinal group at once, and the per-group attention MLPs are 1×1 convs with
  ``groups=K`` (paper appendix A);
* the attention MLP output is cardinality-major and :class:`RadixSoftmax` transposes it back;
* state-dict keys are the official ones: ``conv``, ``bn0``, ``fc1``, ``bn1``, ``fc2``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .deform_conv import DeformConv2d
from .memory_efficient import split_attention_train, supports_memory_efficient


def attention_channels(in_channels: int, radix: int, reduction: int = 4, min_channels: int = 32) -> int:
    """Width of the attention MLP: ``max(C·R // reduction, 32)`` as the released weights."""
    return max(in_channels * radix // reduction, min_channels)


def _inductor_cpu_low_precision_training(x: torch.Tensor) -> bool:
    """Whether ``x`` is a bf16/fp16 CPU activation that autograd records inside torch.compile (decided at trace
    time: no graph break)."""
    return (torch.compiler.is_compiling() and x.device.type == "cpu" and torch.is_grad_enabled()
            and x.dtype in (torch.bfloat16, torch.float16))


class RadixSoftmax(nn.Module):
    """r-softmax (paper eq. 4): softmax over the R splits of each cardinal group, sigmoid when R = 1."""

    def __init__(self, radix: int, cardinality: int):
        super().__init__()
        self.radix = radix
        self.cardinality = cardinality

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = x.shape[0]
        if self.radix > 1:
            # fc2 emits (K, R, C/K) per sample; softmax over R, return radix-major (R, K, C/K)
            x = x.reshape(batch, self.cardinality, self.radix, -1).transpose(1, 2)
            return x.softmax(dim=1).reshape(batch, -1)
        return torch.sigmoid(x).reshape(batch, -1)


class SplitAttention(nn.Module):
    """Split-Attention conv: a K·R-group k×k conv whose R splits per cardinal group are mixed by attention.

    Args:
        in_channels: input channels C_in.
        channels: output channels C (the conv itself produces C·R before the splits are fused).
        kernel_size, stride, padding, dilation: of the grouped conv.
        cardinality: K, the number of cardinal groups (ResNeXt's groups).
        radix: R ≥ 1, splits per cardinal group; R = 1 is an SE-style sigmoid gate per group.
        reduction: attention width is ``max(in_channels·R // reduction, 32)``.
        norm_layer: called with a channel count; BN in the released models.
        attn_norm_layer: norm of the pooled attention vector (``bn1``); defaults to ``norm_layer``.
        memory_efficient: in training with BatchNorm, keep one R·C map for backward instead of two
            (see :mod:`splitattn.layers.memory_efficient`); same outputs and gradients.
        act_layer: activation type, ReLU in the released models.
    """

    def __init__(
        self,
        in_channels: int,
        channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        padding: int | None = None,
        dilation: int = 1,
        cardinality: int = 1,
        radix: int = 2,
        reduction: int = 4,
        bias: bool = False,
        norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d,
        act_layer: Callable[..., nn.Module] = nn.ReLU,
        attn_norm_layer: Callable[[int], nn.Module] | None = None,
        memory_efficient: bool = False,
    ):
        super().__init__()
        if radix < 1 or cardinality < 1:
            raise ValueError(f"SplitAttention needs radix >= 1 and cardinality >= 1, got {radix}, {cardinality}")
        if channels % cardinality:
            raise ValueError(f"channels ({channels}) must be divisible by cardinality ({cardinality})")
        if padding is None:
            padding = dilation * (kernel_size - 1) // 2
        inter = attention_channels(in_channels, radix, reduction)
        self.radix = radix
        self.channels = channels
        self.memory_efficient = memory_efficient
        self.conv = nn.Conv2d(in_channels, channels * radix, kernel_size, stride, padding, dilation,
                              groups=cardinality * radix, bias=bias)
        self.bn0 = norm_layer(channels * radix)
        self.act0 = act_layer(inplace=True)
        self.fc1 = nn.Conv2d(channels, inter, 1, groups=cardinality)
        self.bn1 = (attn_norm_layer or norm_layer)(inter)
        self.act1 = act_layer(inplace=True)
        self.fc2 = nn.Conv2d(inter, channels * radix, 1, groups=cardinality)
        self.rsoftmax = RadixSoftmax(radix, cardinality)

    @torch.jit.unused
    def _forward_lean(self, x: torch.Tensor) -> torch.Tensor:
        return split_attention_train(self, x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_scripting():  # noqa: SIM102  (TorchScript prunes only a bare is_scripting() test)
            if self.memory_efficient and self.training and supports_memory_efficient(self):
                return self._forward_lean(x)
        return self.attend(self.conv(x))

    def attend(self, x: torch.Tensor) -> torch.Tensor:
        """Everything after the split conv: bn0, ReLU, pooling, attention and the weighted sum of the splits."""
        x = self.act0(self.bn0(x))
        batch = x.shape[0]
        splits = x.reshape(batch, self.radix, self.channels, x.shape[2], x.shape[3])  # a view: radix-major
        if self.radix > 1:
            # Sum the splits, then pool (eq. 2-3), in the official order: the logits stay bit-identical.
            gap = splits.sum(1).mean((2, 3), keepdim=True)
        else:
            gap = x.mean((2, 3), keepdim=True)
        attn = self.rsoftmax(self.fc2(self.act1(self.bn1(self.fc1(gap)))))
        if self.radix > 1:
            if not torch.jit.is_scripting():  # noqa: SIM102
                if _inductor_cpu_low_precision_training(splits):
                    # Inductor (torch 2.14) fuses the backward of the broadcast product below into a kernel that
                    # returns NaN gradients in narrow nets (base_planes 16); as a batched matmul it does not.
                    # Eager, GPU, fp32 and inference keep the official arithmetic.
                    return torch.einsum("brchw,brc->bchw", splits, attn.reshape(batch, self.radix, self.channels))
            return (splits * attn.reshape(batch, self.radix, self.channels, 1, 1)).sum(1)
        return x * attn.reshape(batch, self.channels, 1, 1)


class DeformSplitAttention(SplitAttention):
    """Split attention whose k×k conv is deformable (the official detectron2 plug-in's ``SplAtConv2d_dcn``).

    ``forward(x, offset_mask)`` takes the block's offset prediction (its ``conv2_offset`` output); the weights
    keep the plain module's keys (``conv.weight``, ``bn0``, ``fc1``, ...), so ImageNet checkpoints load.
    """

    def __init__(self, in_channels: int, channels: int, kernel_size: int = 3, stride: int = 1,
                 padding: int | None = None, dilation: int = 1, cardinality: int = 1, radix: int = 2,
                 deform_groups: int = 1, deform_modulated: bool = True, **kwargs):
        kwargs["memory_efficient"] = False  # the lean path runs the plain conv itself
        super().__init__(in_channels, channels, kernel_size, stride, padding, dilation, cardinality, radix, **kwargs)
        plain = self.conv
        self.conv = DeformConv2d(in_channels, channels * radix, kernel_size, stride, plain.padding[0], dilation,
                                 groups=cardinality * radix, deform_groups=deform_groups,
                                 modulated=deform_modulated, bias=plain.bias is not None)

    def forward(self, x: torch.Tensor, offset_mask: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return self.attend(self.conv(x, offset_mask))

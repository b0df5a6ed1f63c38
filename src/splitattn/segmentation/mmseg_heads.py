"""OpenMMLab's decode heads, with mmsegmentation's module names, so its ResNeSt checkpoints load by a prefix rename.

Written against mmsegmentation 1.2.2 (open-mmlab/mmsegmentation ``mmseg/models/decode_heads/``: ``decode_head.py``
``cls_seg`` = dropout → ``conv_seg``; ``aspp_head.py``; ``psp_head.py``; ``fcn_head.py``; ``sep_aspp_head.py``) and
mmcv's ``ConvModule`` (conv without bias → ``bn`` → ReLU) / ``DepthwiseSeparableConvModule`` (``depthwise_conv`` and
``pointwise_conv``, each a ConvModule). Every head reads the backbone's feature list (C2..C5) at ``in_index`` and
resizes with ``align_corners=False``, as mmseg's ResNeSt configs set. Written here rather than imported because
mmseg needs mmcv's compiled ops to import and pins mmcv < 2.2.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class ConvModule(nn.Sequential):
    """mmcv ``ConvModule`` with a norm: ``conv`` (no bias) → ``bn`` → ``activate`` (ReLU)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, padding: int = 0, dilation: int = 1,
                 groups: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, dilation=dilation,
                              groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.activate = nn.ReLU(inplace=True)


class SeparableConvModule(nn.Sequential):
    """mmcv ``DepthwiseSeparableConvModule``: depthwise k×k ConvModule, then pointwise 1×1 ConvModule."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, padding: int = 0, dilation: int = 1):
        super().__init__()
        self.depthwise_conv = ConvModule(in_channels, in_channels, kernel_size, padding, dilation, groups=in_channels)
        self.pointwise_conv = ConvModule(in_channels, out_channels, 1)


def _resize(x: torch.Tensor, size) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class DecodeHead(nn.Module):
    """mmseg ``BaseDecodeHead``: the input at ``in_index``, a head body, dropout 0.1 and the 1×1 ``conv_seg``."""

    def __init__(self, channels: int, num_classes: int, in_index: int, dropout: float = 0.1):
        super().__init__()
        self.in_index = in_index
        self.dropout = nn.Dropout2d(dropout)
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)

    def features(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.conv_seg(self.dropout(self.features(inputs)))


class FCNHead(DecodeHead):
    """``num_convs`` 3×3 ConvModules, optionally ``conv_cat`` over [input, their output] (``fcn_head.py``)."""

    def __init__(self, in_channels: int, num_classes: int, channels: int = 512, num_convs: int = 2,
                 concat_input: bool = True, in_index: int = 3):
        super().__init__(channels, num_classes, in_index)
        widths = [in_channels] + [channels] * num_convs
        self.convs = nn.Sequential(*(ConvModule(a, b, 3, padding=1) for a, b in zip(widths, widths[1:])))
        self.conv_cat = ConvModule(in_channels + channels, channels, 3, padding=1) if concat_input else None

    def features(self, inputs):
        x = inputs[self.in_index]
        out = self.convs(x)
        return self.conv_cat(torch.cat([x, out], 1)) if self.conv_cat is not None else out


class ASPPHead(DecodeHead):
    """DeepLabV3 as mmseg: [image pool, 1×1, 3×3 at each rate] → concat → 3×3 ``bottleneck`` (``aspp_head.py``)."""

    def __init__(self, in_channels: int, num_classes: int, channels: int = 512,
                 dilations: Sequence[int] = (1, 12, 24, 36), in_index: int = 3):
        super().__init__(channels, num_classes, in_index)
        self.image_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), ConvModule(in_channels, channels, 1))
        self.aspp_modules = nn.ModuleList(self._branch(in_channels, channels, d) for d in dilations)
        self.bottleneck = ConvModule((len(dilations) + 1) * channels, channels, 3, padding=1)

    @staticmethod
    def _branch(in_channels: int, channels: int, dilation: int) -> nn.Module:
        if dilation == 1:
            return ConvModule(in_channels, channels, 1)
        return ConvModule(in_channels, channels, 3, padding=dilation, dilation=dilation)

    def aspp(self, x: torch.Tensor) -> torch.Tensor:
        outs = [_resize(self.image_pool(x), x.shape[-2:])] + [branch(x) for branch in self.aspp_modules]
        return self.bottleneck(torch.cat(outs, 1))

    def features(self, inputs):
        return self.aspp(inputs[self.in_index])


class SeparableASPPHead(ASPPHead):
    """DeepLabV3+ as mmseg's ``DepthwiseSeparableASPPHead``: separable atrous branches, the ASPP output resized to
    C2 and concatenated with C2 through the 1×1 ``c1_bottleneck``, then two separable 3×3 ``sep_bottleneck``s."""

    def __init__(self, in_channels: int, c1_in_channels: int, num_classes: int, channels: int = 512,
                 c1_channels: int = 48, dilations: Sequence[int] = (1, 12, 24, 36), in_index: int = 3,
                 c1_index: int = 0):
        super().__init__(in_channels, num_classes, channels, dilations, in_index)
        self.c1_index = c1_index
        self.c1_bottleneck = ConvModule(c1_in_channels, c1_channels, 1)
        self.sep_bottleneck = nn.Sequential(SeparableConvModule(channels + c1_channels, channels, 3, padding=1),
                                            SeparableConvModule(channels, channels, 3, padding=1))

    @staticmethod
    def _branch(in_channels: int, channels: int, dilation: int) -> nn.Module:
        if dilation == 1:
            return ConvModule(in_channels, channels, 1)
        return SeparableConvModule(in_channels, channels, 3, padding=dilation, dilation=dilation)

    def features(self, inputs):
        low = self.c1_bottleneck(inputs[self.c1_index])
        high = _resize(self.aspp(inputs[self.in_index]), low.shape[-2:])
        return self.sep_bottleneck(torch.cat([high, low], 1))


class PSPHead(DecodeHead):
    """PSPNet's pyramid pooling (``psp_head.py``): adaptive pools at ``pool_scales``, 1×1 ConvModules, resized and
    concatenated with the input, 3×3 ``bottleneck``."""

    def __init__(self, in_channels: int, num_classes: int, channels: int = 512,
                 pool_scales: Sequence[int] = (1, 2, 3, 6), in_index: int = 3):
        super().__init__(channels, num_classes, in_index)
        self.psp_modules = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(scale), ConvModule(in_channels, channels, 1)) for scale in pool_scales)
        self.bottleneck = ConvModule(in_channels + len(pool_scales) * channels, channels, 3, padding=1)

    def features(self, inputs):
        x = inputs[self.in_index]
        pooled = [_resize(branch(x), x.shape[-2:]) for branch in self.psp_modules]
        return self.bottleneck(torch.cat([x, *pooled], 1))

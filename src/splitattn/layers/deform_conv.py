"""Deformable convolution (DCNv2, modulated; DCNv1 without the mask) on ``torchvision.ops.deform_conv2d``.

DCNv2 (Zhu et al., "Deformable ConvNets v2", arXiv 1811.11168, eq. 3):
``y(p) = Σ_k w_k · x(p + p_k + Δp_k) · Δm_k``, x sampled bilinearly (zero outside the map), Δp_k and
Δm_k = sigmoid(·) predicted per output position by an ordinary conv on the same input.

The prediction is laid out as the official ResNeSt detectron2 plug-in lays it out
(zhanghang1989/ResNeSt ``resnest/d2/resnest.py`` ``DeformBottleneckBlock`` and ``resnest/d2/splat.py``
``SplAtConv2d_dcn``): one ``conv2_offset`` with ``groups = deform_groups`` emits ``3·G·k²`` channels (``2·G·k²``
for DCNv1); ``torch.chunk(·, 3)`` then ``cat`` of the first two chunks makes the offsets (so the offsets are
the first ``2·G·k²`` channels, unchanged) and the last ``G·k²`` channels, through a sigmoid, the mask.
Inside, detectron2's kernel (``detectron2/layers/csrc/deformable/deform_conv_cuda_kernel.cu``,
``modulated_deformable_im2col_gpu_kernel``) reads offset channel ``2·(g·k² + i·k + j)`` as Δh and ``+1`` as Δw,
and mask channel ``g·k² + i·k + j``: torchvision's ``deform_conv2d`` reads the same layout, so the
tensors pass through as they are. Written as a module because torchvision offers only the function
(its ``DeformConv2d`` takes offsets from outside and has no mask split); the tests check it against the
equation written out.
"""

from __future__ import annotations

import math

import torch
import torch.fx
from torch import nn
from torchvision.ops import deform_conv2d


def offset_channels(kernel_size: int, deform_groups: int, modulated: bool = True) -> int:
    """Channels of the offset (and mask) prediction: ``(3 if modulated else 2) · G · k²``."""
    return (3 if modulated else 2) * deform_groups * kernel_size * kernel_size


def offset_conv(in_channels: int, kernel_size: int, stride: int, dilation: int, deform_groups: int,
                modulated: bool = True) -> nn.Conv2d:
    """The plug-in's ``conv2_offset``: a k×k conv with ``groups=deform_groups`` and bias, zero-initialised so a
    fresh deformable conv starts as the plain conv (offsets 0, mask sigmoid(0) = 0.5 for DCNv2)."""
    conv = nn.Conv2d(in_channels, offset_channels(kernel_size, deform_groups, modulated), kernel_size, stride,
                     dilation * (kernel_size - 1) // 2, dilation, groups=deform_groups, bias=True)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


class DeformConv2d(nn.Module):
    """A k×k deformable conv taking its input and the offset conv's raw output (offsets, then mask logits).

    ``weight`` has an ordinary conv's shape and key, so ImageNet weights of the plain conv load into it
    (detectron2 does the same when a DCN detector starts from an ImageNet backbone).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 padding: int = 1, dilation: int = 1, groups: int = 1, deform_groups: int = 1,
                 modulated: bool = True, bias: bool = False):
        super().__init__()
        if in_channels % groups or out_channels % groups or in_channels % deform_groups:
            raise ValueError(f"in/out channels ({in_channels}, {out_channels}) must divide by groups ({groups}) "
                             f"and in_channels by deform_groups ({deform_groups})")
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.stride, self.padding, self.dilation = stride, padding, dilation
        self.groups, self.deform_groups, self.modulated = groups, deform_groups, modulated
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        # detectron2's ModulatedDeformConv init (detectron2/layers/deform_conv.py)
        nn.init.kaiming_uniform_(self.weight, nonlinearity="relu")

    def forward(self, x: torch.Tensor, offset_mask: torch.Tensor) -> torch.Tensor:
        points = self.deform_groups * self.kernel_size * self.kernel_size
        expected = (3 if self.modulated else 2) * points
        if not torch.jit.is_scripting():
            self._check_offsets(offset_mask, expected)
        offset = offset_mask[:, : 2 * points]
        mask = offset_mask[:, 2 * points:].sigmoid() if self.modulated else None
        return _deform_conv2d(x, offset, self.weight, self.bias, (self.stride, self.stride),
                              (self.padding, self.padding), (self.dilation, self.dilation), mask)

    @torch.jit.unused
    def _check_offsets(self, offset_mask: torch.Tensor, expected: int) -> None:
        if isinstance(offset_mask, torch.fx.Proxy):  # symbolic under torch.fx; the block sized it
            return
        if offset_mask.shape[1] != expected:
            raise ValueError(f"the offset prediction has {offset_mask.shape[1]} channels, expected {expected} "
                             f"(({'3' if self.modulated else '2'} · {self.deform_groups} groups · "
                             f"{self.kernel_size}²)")

    def reset_parameters_fan_out(self) -> None:
        """He-normal fan-out, as the plain convs of a ResNet block (detectron2's ``c2_msra_fill``)."""
        fan_out = self.kernel_size * self.kernel_size * self.out_channels
        nn.init.normal_(self.weight, 0.0, math.sqrt(2.0 / fan_out))

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, dilation={self.dilation}, groups={self.groups}, "
                f"deform_groups={self.deform_groups}, modulated={self.modulated}")


@torch.fx.wrap
def _deform_conv2d(x: torch.Tensor, offset: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                   stride: tuple[int, int], padding: tuple[int, int], dilation: tuple[int, int],
                   mask: torch.Tensor | None) -> torch.Tensor:
    """torchvision's op as one leaf call under ``torch.fx`` (its Python wrapper branches on tensor shapes)."""
    return deform_conv2d(x, offset, weight, bias, stride, padding, dilation, mask)

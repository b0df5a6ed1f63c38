"""A convolution with its norm folded in and its activation (and residual add) fused into one call.

On the CPU the eager path calls oneDNN's fused primitives directly (the ones ``torch.compile`` emits
for CPU inference): conv + bias + ReLU, and conv + bias + residual add + ReLU, with the weight
re-ordered once into oneDNN's blocked layout instead of on every call. Under TorchScript, tracing,
ONNX export, autograd, on GPU, or where oneDNN is missing, the same module runs plain
``F.conv2d`` + add + ReLU, so the exported graph is portable and outputs agree.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

ONEDNN_DTYPES = (torch.float32, torch.bfloat16)


def onednn_usable(x: torch.Tensor) -> bool:
    """True when the fused oneDNN ops may serve ``x`` (eager CPU inference in fp32 / bf16)."""
    if torch.jit.is_scripting() or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
        return False
    if torch.compiler.is_compiling() or torch.compiler.is_exporting():
        return False  # inductor fuses the plain form itself; exporters need standard ops
    return (x.device.type == "cpu" and x.dtype in ONEDNN_DTYPES and torch.backends.mkldnn.is_available()
            and not (torch.is_grad_enabled() and x.requires_grad))


class ConvAct(nn.Module):
    __jit_ignored_attributes__ = ["_packed"]

    """``act(conv(x) + bias [+ residual])`` with a folded weight and bias.

    Args:
        weight, bias: the folded convolution parameters (bias always present after folding).
        stride, padding, dilation, groups: of the original convolution.
        relu: apply ReLU at the end.
        norm: a norm that could not be folded (GroupNorm), applied before the residual / ReLU.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, stride=(1, 1), padding=(0, 0), dilation=(1, 1),
                 groups: int = 1, relu: bool = True, norm: nn.Module | None = None):
        super().__init__()
        self.weight = nn.Parameter(weight.detach().clone(), requires_grad=False)
        self.bias = nn.Parameter(bias.detach().clone(), requires_grad=False)
        self.stride, self.padding, self.dilation = list(stride), list(padding), list(dilation)
        self.groups = groups
        self.relu = relu
        self.norm = norm if norm is not None else nn.Identity()
        self.fusable = norm is None
        self._packed: dict[tuple, tuple[tuple[int, int], torch.Tensor]] = {}

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, scale: torch.Tensor | None, shift: torch.Tensor | None,
                  relu: bool, norm: nn.Module | None = None) -> ConvAct:
        """Fold ``y = conv(x)·scale + shift`` (a BN in eval mode) into one convolution."""
        # folded in float64, then rounded once to the model's dtype
        weight = conv.weight.detach().double()
        bias = (conv.bias.detach().double() if conv.bias is not None
                else torch.zeros(conv.out_channels, dtype=torch.float64, device=conv.weight.device))
        if scale is not None:
            weight = weight * scale.reshape(-1, 1, 1, 1)
            bias = bias * scale + shift
        dtype = conv.weight.dtype
        return cls(weight.to(dtype), bias.to(dtype), conv.stride, conv.padding, conv.dilation, conv.groups,
                   relu, norm)

    def extra_repr(self) -> str:
        out, inp = self.weight.shape[0], self.weight.shape[1] * self.groups
        return (f"{inp}, {out}, kernel_size={tuple(self.weight.shape[2:])}, stride={tuple(self.stride)}, "
                f"groups={self.groups}, relu={self.relu}, fused_norm={self.fusable}")

    def _packed_weight(self, dtype: torch.dtype, input_size: list[int]) -> torch.Tensor:
        """The weight in the oneDNN layout chosen for this input shape (packing without the shape can
        pick a layout several times slower), re-made only when the parameter changes."""
        # inference tensors (made under torch.inference_mode) cannot change in place and have no version
        version = (self.weight.data_ptr(), 0 if self.weight.is_inference() else self.weight._version)
        key = (dtype, *input_size)
        cached = self._packed.get(key)
        if cached is None or cached[0] != version:
            if len(self._packed) >= 8:  # many input shapes (e.g. detection): keep the newest few
                self._packed.pop(next(iter(self._packed)))
            packed = torch.ops.mkldnn._reorder_convolution_weight(
                self.weight.detach().to(dtype), self.padding, self.stride, self.dilation, self.groups, input_size)
            self._packed[key] = cached = (version, packed)
        return cached[1]

    @torch.jit.unused
    def _onednn_forward(self, x: torch.Tensor, residual: torch.Tensor | None) -> torch.Tensor:
        if torch.is_autocast_enabled("cpu"):
            x = x.to(torch.get_autocast_dtype("cpu"))
        weight, bias = self._packed_weight(x.dtype, list(x.shape)), self.bias.to(x.dtype)
        if residual is None:
            return torch.ops.mkldnn._convolution_pointwise(
                x, weight, bias, self.padding, self.stride, self.dilation, self.groups,
                "relu" if self.relu else "none", [], "")
        return torch.ops.mkldnn._convolution_pointwise.binary(
            x, residual.to(x.dtype), weight, bias, self.padding, self.stride, self.dilation, self.groups,
            "add", None, "relu" if self.relu else None, [], "")

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        if not torch.jit.is_scripting():  # noqa: SIM102  (TorchScript skips only a bare is_scripting() branch)
            if self.fusable and onednn_usable(x):
                return self._onednn_forward(x, residual)
        y = F.conv2d(x, self.weight.to(x.dtype), self.bias.to(x.dtype), self.stride, self.padding, self.dilation,
                     self.groups)
        y = self.norm(y)
        if residual is not None:
            y = y + residual
        return F.relu(y) if self.relu else y

    def _apply(self, fn, recurse=True):
        self._packed = {}  # a device / dtype move invalidates the packed copies
        return super()._apply(fn, recurse)

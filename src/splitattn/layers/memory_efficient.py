"""Split attention's training path with one feature map saved instead of two.

Plain autograd keeps two R·C-channel maps per block for the backward pass: BatchNorm's input ``z``
(the split conv's output) and ReLU's output ``y`` (also used by the weighted sum). Here only ``z`` is
kept, with the per-channel batch mean and inverse std; ``y = relu(bn0(z))`` is recomputed in the
backward pass (one cheap elementwise pass). Gradients and running statistics equal nn.BatchNorm2d's.

One autograd function covers bn0 → ReLU → pool → attention → weighted sum; the attention MLP inside it
is a small recorded graph. The backward recomputes ``y`` once, joins the gradients of its two uses and
runs one BatchNorm backward, in place where it can.
"""

from __future__ import annotations

import torch
from torch import nn


def _wide(t: torch.Tensor) -> torch.Tensor:
    """bf16/fp16 (autocast) to fp32 for statistics and backward arithmetic; fp32/fp64 unchanged."""
    return t.float() if t.dtype in (torch.bfloat16, torch.float16) else t


def _recompute(z, weight, bias, mean, invstd):
    """x̂ = (z − mean)·invstd and y = relu(γ·x̂ + β), from the saved z."""
    xhat = torch.addcmul((-mean * invstd)[None, :, None, None], z, invstd[None, :, None, None])
    return xhat, torch.addcmul(bias[None, :, None, None], xhat, weight[None, :, None, None]).relu_()


def _forward_map(z, weight, bias, mean, invstd):
    """y = relu(γ·(z − mean)·invstd + β) in one fused pass plus an in-place ReLU."""
    scale = weight * invstd
    shift = bias - mean * scale
    # computed in fp32 and rounded once to z's dtype (bf16 under autocast), as nn.BatchNorm2d does
    return torch.addcmul(shift[None, :, None, None], _wide(z), scale[None, :, None, None]).relu_().to(z.dtype)


def _norm_backward_(du, xhat, weight, invstd):
    """dz, dγ, dβ of u = γ·(z − mean)·invstd with batch statistics; overwrites ``du`` and ``xhat``."""
    dbias = du.sum((0, 2, 3))
    dweight = torch.einsum("bchw,bchw->c", du, xhat)
    count = du.numel() / du.shape[1]
    xhat.mul_((dweight / count)[None, :, None, None])
    du.sub_((dbias / count)[None, :, None, None]).sub_(xhat).mul_((weight * invstd)[None, :, None, None])
    return du, dweight, dbias


class _LeanSplitAttention(torch.autograd.Function):
    """bn0 → ReLU → pool → attention MLP → weighted sum, keeping only ``z`` of the big maps.

    The MLP (on a B×C vector) is recorded as a small graph inside the forward and differentiated with
    ``torch.autograd.grad`` in the backward, so the two paths from ``y`` (through the pool and through
    the weighted sum) meet before one BatchNorm backward.
    """

    @staticmethod
    def forward(ctx, z, weight, bias, mean, invstd, mlp, radix: int, *mlp_params):
        y = _forward_map(z, weight, bias, mean, invstd)
        batch, channels = z.shape[0], z.shape[1] // radix
        gap = y.mean((2, 3)).reshape(batch, radix, channels).sum(1)
        with torch.enable_grad():
            gap_leaf = gap.detach().requires_grad_()
            attn = mlp(gap_leaf)
        weights = attn.detach()  # in its own dtype: fp32 softmax under autocast, as the plain path multiplies
        out = y[:, :channels] * weights[:, 0, :, None, None]
        for r in range(1, radix):
            out.addcmul_(y[:, r * channels:(r + 1) * channels], weights[:, r, :, None, None])
        ctx.save_for_backward(z, weight, bias, mean, invstd)
        ctx.graph = (gap_leaf, attn, mlp_params)
        return out

    @staticmethod
    def backward(ctx, dout):
        z, weight, bias, mean, invstd = ctx.saved_tensors
        gap_leaf, attn, mlp_params = ctx.graph
        del ctx.graph
        batch, radix, channels = attn.shape
        height, width = z.shape[2], z.shape[3]
        xhat, y = _recompute(_wide(z), weight, bias, mean, invstd)
        dout = _wide(dout)
        dattn = torch.stack([(y[:, r * channels:(r + 1) * channels] * dout).sum((2, 3)) for r in range(radix)], 1)
        grads = torch.autograd.grad(attn, [gap_leaf, *mlp_params], dattn.to(attn.dtype), allow_unused=True)
        dgap = (_wide(grads[0]) / (height * width))[:, :, None, None]
        weights = _wide(attn.detach())
        du = torch.empty_like(y)
        for r in range(radix):  # dL/dy_r = dout·a_r (weighted sum) + dgap/HW (pool), in one pass per split
            torch.addcmul(dgap, dout, weights[:, r, :, None, None], out=du[:, r * channels:(r + 1) * channels])
        du.masked_fill_(y <= 0, 0.0)  # ReLU
        del y
        dz, dweight, dbias = _norm_backward_(du, xhat, weight, invstd)
        return (dz.to(z.dtype), dweight, dbias, None, None, None, None, *grads[1:])


@torch.no_grad()
def batch_statistics(z: torch.Tensor, norm: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch mean and inverse std of ``z``, updating ``norm``'s running statistics exactly as nn.BatchNorm2d."""
    var, mean = torch.var_mean(_wide(z), dim=(0, 2, 3), correction=0)
    count = z.numel() / z.shape[1]
    if norm.track_running_stats and norm.running_mean is not None:
        norm.num_batches_tracked.add_(1)
        momentum = 1.0 / float(norm.num_batches_tracked) if norm.momentum is None else norm.momentum
        norm.running_mean.lerp_(mean, momentum)
        norm.running_var.lerp_(var * count / max(count - 1, 1), momentum)
    return mean, torch.rsqrt(var + norm.eps)


def supports_memory_efficient(module) -> bool:
    """BatchNorm with this process's batch statistics and a ReLU: the case the functions implement."""
    from .norm import uses_batch_statistics

    bn0 = module.bn0
    # traced / compiled graphs take the plain path (inductor plans its own memory)
    return (uses_batch_statistics(bn0) and bn0.affine and isinstance(module.act0, nn.ReLU)
            and not torch.jit.is_tracing() and not torch.compiler.is_compiling())


def split_attention_train(module, x: torch.Tensor) -> torch.Tensor:
    """The forward of :class:`~splitattn.layers.SplitAttention` in training mode, saving ``z`` only."""
    z = module.conv(x)
    mean, invstd = batch_statistics(z, module.bn0)
    batch = x.shape[0]

    def mlp(gap: torch.Tensor) -> torch.Tensor:
        hidden = module.act1(module.bn1(module.fc1(gap[:, :, None, None])))
        return module.rsoftmax(module.fc2(hidden)).reshape(batch, module.radix, module.channels)

    params = [p for m in (module.fc1, module.bn1, module.fc2) for p in m.parameters() if p.requires_grad]
    return _LeanSplitAttention.apply(z, module.bn0.weight, module.bn0.bias, mean, invstd, mlp, module.radix, *params)

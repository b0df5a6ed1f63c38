"""Split attention's training path with one feature map saved instead of two.

Plain autograd keeps two R·C-channel maps per block for the backward pass: BatchNorm's input ``z``
(the split conv's output) and ReLU's output ``y`` (also used by the weighted sum). Here only ``z`` is
kept, with the per-channel batch mean and inverse std; ``y = relu(bn0(z))`` is recomputed in the
backward pass (one cheap elementwise pass). Gradients and running statistics equal nn.BatchNorm2d's.

Two autograd functions share the recomputation because the attention MLP sits between them:
``_NormReLUPool`` gives the pooled vector (and ``y``, which it does not keep), ``_WeightedSum`` mixes
the splits with the attention and routes its gradient to ``z`` through the recomputed ``y``.
"""

from __future__ import annotations

import torch
from torch import nn


def _wide(t: torch.Tensor) -> torch.Tensor:
    """bf16/fp16 (autocast) to fp32 for statistics and backward arithmetic; fp32/fp64 unchanged."""
    return t.float() if t.dtype in (torch.bfloat16, torch.float16) else t


def _recompute(z, weight, bias, mean, invstd):
    """x̂ = (z − mean)·invstd, u = γ·x̂ + β and y = relu(u), from the saved z."""
    xhat = torch.addcmul((-mean * invstd)[None, :, None, None], z, invstd[None, :, None, None])
    u = torch.addcmul(bias[None, :, None, None], xhat, weight[None, :, None, None])
    return xhat, u, torch.relu(u)


def _forward_map(z, weight, bias, mean, invstd):
    """y = relu(γ·(z − mean)·invstd + β) in one fused pass plus an in-place ReLU."""
    scale = weight * invstd
    shift = (bias - mean * scale).to(z.dtype)  # y keeps z's dtype (bf16 under autocast), as nn.BatchNorm2d's
    return torch.addcmul(shift[None, :, None, None], z, scale.to(z.dtype)[None, :, None, None]).relu_()


def _norm_backward(du, xhat, weight, invstd):
    """dz, dγ, dβ of u = γ·(z − mean)·invstd with batch statistics, from du = dL/du."""
    dbias = du.sum((0, 2, 3))
    dweight = (du * xhat).sum((0, 2, 3))
    count = du.numel() / du.shape[1]
    scale = (weight * invstd)[None, :, None, None]
    dz = scale * (du - (dbias / count)[None, :, None, None] - xhat * (dweight / count)[None, :, None, None])
    return dz, dweight, dbias


class _NormReLUPool(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z, weight, bias, mean, invstd, radix: int):
        y = _forward_map(z, weight, bias, mean, invstd)
        batch, channels = z.shape[0], z.shape[1] // radix
        gap = y.mean((2, 3)).reshape(batch, radix, channels).sum(1)
        ctx.save_for_backward(z, weight, bias, mean, invstd)
        ctx.radix = radix
        ctx.mark_non_differentiable(y)
        return gap, y

    @staticmethod
    def backward(ctx, dgap, _dy):
        z, weight, bias, mean, invstd = ctx.saved_tensors
        xhat, u, _ = _recompute(_wide(z), weight, bias, mean, invstd)  # backward in fp32, as autocast's BN
        height, width = z.shape[2], z.shape[3]
        dy = (_wide(dgap) / (height * width)).repeat(1, ctx.radix)[:, :, None, None]
        du = dy * (u > 0)
        dz, dweight, dbias = _norm_backward(du, xhat, weight, invstd)
        return dz.to(z.dtype), dweight, dbias, None, None, None


class _WeightedSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z, y, attn, weight, bias, mean, invstd):
        batch, radix, channels = attn.shape
        splits = y.reshape(batch, radix, channels, y.shape[2], y.shape[3])
        out = (splits * attn[..., None, None]).sum(1)
        ctx.save_for_backward(z, attn, weight, bias, mean, invstd)
        return out

    @staticmethod
    def backward(ctx, dout):
        z, attn, weight, bias, mean, invstd = ctx.saved_tensors
        xhat, u, y = _recompute(_wide(z), weight, bias, mean, invstd)
        batch, radix, channels = attn.shape
        splits = y.reshape(batch, radix, channels, y.shape[2], y.shape[3])
        dout = _wide(dout)
        dattn = (splits * dout[:, None]).sum((3, 4))
        dy = (dout[:, None] * _wide(attn)[..., None, None]).reshape_as(y)
        du = dy * (u > 0)
        dz, dweight, dbias = _norm_backward(du, xhat, weight, invstd)
        return dz.to(z.dtype), None, dattn.to(attn.dtype), dweight, dbias, None, None


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
    return (uses_batch_statistics(bn0) and bn0.affine and isinstance(module.act0, nn.ReLU)
            and not torch.jit.is_tracing())


def split_attention_train(module, x: torch.Tensor) -> torch.Tensor:
    """The forward of :class:`~splitattn.layers.SplitAttention` in training mode, saving ``z`` only."""
    z = module.conv(x)
    mean, invstd = batch_statistics(z, module.bn0)
    weight, bias = module.bn0.weight, module.bn0.bias
    gap, y = _NormReLUPool.apply(z, weight, bias, mean, invstd, module.radix)
    attn = module.rsoftmax(module.fc2(module.act1(module.bn1(module.fc1(gap[:, :, None, None])))))
    attn = attn.reshape(x.shape[0], module.radix, module.channels)
    return _WeightedSum.apply(z, y, attn, weight, bias, mean, invstd)

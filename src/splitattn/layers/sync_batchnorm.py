"""Synchronised BatchNorm: one meaning of "syncbn" everywhere, on the CPU (gloo) as on GPUs.

``norm_layer='syncbn'`` (create_model), ``norm='syncbn'`` (create_detector, create_segmenter) and
``engine.sync_bn`` all give :class:`SyncBatchNorm`: BatchNorm whose statistics are computed over the
batches of every process when training under ``torchrun``, and plain BatchNorm otherwise (one process,
or eval mode). ``torch.nn.SyncBatchNorm`` refuses CPU tensors (and DDP refuses it on CPU), so this one
all-reduces the statistics itself, with the exact BatchNorm gradient over the global batch (the formulas
of torch's CUDA kernels: input gradients use the all-reduced sums of dy and dy·x̂; γ/β get their local
sums and DDP averages them like any other parameter). On GPUs the engine swaps it for torch's fused
``nn.SyncBatchNorm`` (:func:`convert_sync_batchnorm`); the state-dict keys are BatchNorm2d's throughout.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


def distributed_world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class _SyncBatchNormFunction(torch.autograd.Function):
    """BatchNorm over the batches of all processes: statistics and gradients are all-reduced."""

    @staticmethod
    def forward(ctx, x, weight, bias, eps, group):
        dims = [0, *range(2, x.dim())]
        channels = x.shape[1]
        shape = [1, channels] + [1] * (x.dim() - 2)
        # Per-process count, mean and sum of squared deviations, merged exactly (Chan et al.):
        # E[x²] − E[x]² would lose the variance of features whose mean dwarfs their spread.
        local_mean = x.mean(dims)
        local = torch.cat([torch.tensor([x.numel() // channels], dtype=x.dtype, device=x.device), local_mean,
                           ((x - local_mean.view(shape)) ** 2).sum(dims)])
        gathered = [torch.empty_like(local) for _ in range(dist.get_world_size(group))]
        dist.all_gather(gathered, local, group=group)
        stats = torch.stack(gathered)
        counts, means, m2 = stats[:, :1], stats[:, 1:channels + 1], stats[:, channels + 1:]
        total = counts.sum()
        mean = (counts * means).sum(0) / total
        var = (m2 + counts * (means - mean) ** 2).sum(0) / total  # biased, for normalisation
        invstd = torch.rsqrt(var + eps)
        xhat = (x - mean.view(shape)) * invstd.view(shape)
        ctx.save_for_backward(xhat, weight, invstd, total)
        ctx.group = group
        out = xhat * weight.view(shape) + bias.view(shape) if weight is not None else xhat
        return out, mean, var, total

    @staticmethod
    def backward(ctx, grad_out, _mean, _var, _total):
        xhat, weight, invstd, total = ctx.saved_tensors
        dims = [0, *range(2, grad_out.dim())]
        channels = grad_out.shape[1]
        shape = [1, channels] + [1] * (grad_out.dim() - 2)
        sum_dy = grad_out.sum(dims)
        sum_dy_xhat = (grad_out * xhat).sum(dims)
        grad_weight = sum_dy_xhat if weight is not None else None
        grad_bias = sum_dy if weight is not None else None
        reduced = torch.cat([sum_dy, sum_dy_xhat])
        dist.all_reduce(reduced, group=ctx.group)
        sum_dy, sum_dy_xhat = reduced[:channels], reduced[channels:]
        scale = invstd if weight is None else invstd * weight
        grad_x = (grad_out - (sum_dy / total).view(shape) - xhat * (sum_dy_xhat / total).view(shape))
        grad_x = grad_x * scale.view(shape)
        return grad_x, grad_weight, grad_bias, None, None


class SyncBatchNorm(nn.BatchNorm2d):
    """BatchNorm synchronised over the processes in training (any backend); BatchNorm2d's parameters, buffers
    and state-dict keys."""

    def __init__(self, *args, process_group=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.process_group = process_group

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and distributed_world() > 1):
            return super().forward(x)
        out, mean, var, total = _SyncBatchNormFunction.apply(x, self.weight, self.bias, self.eps, self.process_group)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                unbiased = var * total / (total - 1).clamp(min=1)
                self.running_mean.lerp_(mean.detach(), momentum)
                self.running_var.lerp_(unbiased.detach(), momentum)
        return out


def convert_sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """Every BatchNorm2d becomes synchronised: torch's fused SyncBatchNorm on GPU, :class:`SyncBatchNorm` on CPU."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    for name, child in model.named_children():
        if type(child) is nn.BatchNorm2d:
            reference = next(iter(child.state_dict().values()))  # keep dtype and device
            synced = SyncBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                      child.track_running_stats, device=reference.device,
                                      dtype=reference.dtype if reference.is_floating_point() else None)
            synced.load_state_dict(child.state_dict())
            synced.train(child.training)
            setattr(model, name, synced)
        else:
            convert_sync_batchnorm(child, device)
    return model

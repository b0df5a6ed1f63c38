"""Precise BatchNorm: replace BN's running averages with true averages over many batches, at fixed weights.

During training the EMA in ``running_mean`` / ``running_var`` mixes statistics of weights that have since
changed; precise BN re-measures them with the current weights (Wu & Johnson, "Rethinking 'Batch' in
BatchNorm", 2021, https://arxiv.org/abs/2105.07576, Sec. 3). This is what detectron2 runs before evaluation
when ``TEST.PRECISE_BN.ENABLED`` (``PreciseBN`` hook, ``NUM_ITER`` = 200):

- https://github.com/facebookresearch/detectron2/blob/main/detectron2/engine/hooks.py (``PreciseBN``)
- https://github.com/facebookresearch/fvcore/blob/main/fvcore/nn/precise_bn.py (``update_bn_stats``)

Written here without fvcore, computing what its ``update_bn_stats`` computes (fvcore 0.1.5, the version
detectron2 0.6 pins); the tests check it against fvcore itself.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

logger = logging.getLogger(__name__)

# fvcore's BN_MODULE_TYPES. splitattn.layers.SyncBatchNorm subclasses BatchNorm2d, so it counts;
# FrozenBatchNorm2d is no _BatchNorm and does not.
BN_MODULE_TYPES: tuple[type[nn.Module], ...] = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def get_bn_modules(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The BN layers precise BN updates: those in training mode that keep running statistics."""
    # fvcore also takes track_running_stats=False layers and then fails on their missing buffers.
    return [m for m in model.modules()
            if m.training and isinstance(m, BN_MODULE_TYPES) and m.running_mean is not None]


class _PopulationStats:
    """Mean and variance of all values a BN layer saw, from its per-batch statistics.

    fvcore's ``_PopulationVarianceEstimator``, same arithmetic in the same order: batches are weighted by
    their size (spatial positions count as samples), and the Bessel correction BN applied to each batch
    variance is undone, so the result is the biased variance of everything pooled, not a mean of batch
    variances.
    """

    def __init__(self, buffer: torch.Tensor):
        self.mean = torch.zeros_like(buffer)
        self.square_mean = torch.zeros_like(buffer)
        self.total = 0

    def update(self, batch_mean: torch.Tensor, batch_var: torch.Tensor, batch_size: int) -> None:
        self.total += batch_size
        batch_square_mean = batch_mean.square() + batch_var * ((batch_size - 1) / batch_size)
        self.mean += (batch_mean - self.mean) * (batch_size / self.total)
        self.square_mean += (batch_square_mean - self.square_mean) * (batch_size / self.total)

    @property
    def var(self) -> torch.Tensor:
        return self.square_mean - self.mean.square()


def _call_model(model: nn.Module, batch: Any) -> Any:
    return model(batch)


@torch.no_grad()
def update_bn_stats(
    model: nn.Module,
    batches: Iterable,
    num_iters: int = 200,
    forward: Callable[[nn.Module, Any], Any] | None = None,
    progress: bool = True,
) -> int:
    """Set every training-mode BN layer's running statistics to their precise values over ``num_iters`` batches.

    Each layer's ``running_mean`` becomes the mean of all values it saw and ``running_var`` their (biased)
    variance, as fvcore's ``update_bn_stats`` computes them. Layers in eval mode, ``FrozenBatchNorm2d`` and
    BNs without running statistics are left alone, as is the model's train/eval mode; momenta are restored.
    Other stateful layers (and ``num_batches_tracked``) do change, as under fvcore.

    Args:
        model: put the BN layers to update in training mode first (detectron2 calls this mid-training).
        batches: iterable of inputs, e.g. a training loader; exactly ``num_iters`` are taken from it.
        num_iters: number of batches to average over (detectron2's ``TEST.PRECISE_BN.NUM_ITER``).
        forward: ``forward(model, batch)`` runs one batch; default ``model(batch)``.
        progress: show a tqdm bar.

    Returns:
        The number of batches used: ``num_iters``, or 0 when the model has no BN in training mode (then
        nothing is read from ``batches``, like detectron2's hook, which disables itself).

    Raises:
        ValueError: ``num_iters`` < 1, ``batches`` yields fewer than ``num_iters`` batches (statistics and
            momenta are then restored: fvcore would leave them half-updated), or a BN layer runs twice in one
            forward.
    """
    if num_iters < 1:
        # fvcore accepts 0 and then writes zeros into every running mean and variance.
        raise ValueError(f"precise BN needs num_iters >= 1, got {num_iters}: pass the number of batches to average")
    bn_layers = get_bn_modules(model)
    if not bn_layers:
        logger.info("precise BN skipped: the model has no BatchNorm layer in training mode")
        return 0
    try:  # fail before hundreds of forward passes when the length is known
        available = len(batches)
    except TypeError:
        available = None
    if available is not None and available < num_iters:
        raise _too_few(available, num_iters)
    forward = forward or _call_model
    names = {bn: name for name, bn in model.named_modules()}
    saved = [(bn.momentum, {k: v.clone() for k, v in bn.named_buffers(recurse=False) if v is not None})
             for bn in bn_layers]
    batch_sizes: dict[nn.Module, int] = {}

    def record_batch_size(module: nn.Module, inputs: tuple) -> None:
        if module in batch_sizes:
            raise ValueError(f"BN layer {names[module]!r} ran twice in one forward: precise BN needs each BN "
                             "module used at most once per batch")
        x = inputs[0]
        batch_sizes[module] = x.numel() // x.shape[1]  # spatial positions count as samples

    # With momentum 1 each forward leaves exactly that batch's mean and unbiased variance in the buffers.
    for bn in bn_layers:
        bn.momentum = 1.0
    hooks = [bn.register_forward_pre_hook(record_batch_size) for bn in bn_layers]
    stats = [_PopulationStats(bn.running_mean) for bn in bn_layers]
    used = 0
    try:
        for batch in tqdm(itertools.islice(batches, num_iters), total=num_iters, desc="precise BN",
                          disable=not progress, leave=False):
            batch_sizes.clear()
            forward(model, batch)
            used += 1
            for bn, stat in zip(bn_layers, stats):
                if bn in batch_sizes:  # a layer this batch did not reach contributes nothing
                    stat.update(bn.running_mean, bn.running_var, batch_sizes[bn])
        if used < num_iters:
            raise _too_few(used, num_iters)
    except BaseException:
        for bn, (momentum, buffers) in zip(bn_layers, saved):
            bn.momentum = momentum
            for key, value in buffers.items():
                getattr(bn, key).copy_(value)
        raise
    finally:
        for hook in hooks:
            hook.remove()

    unused = []
    for bn, stat, (momentum, _) in zip(bn_layers, stats, saved):
        bn.momentum = momentum
        if stat.total == 0:  # fvcore would write zeros (a zero variance); keep what the layer had instead
            unused.append(names[bn])
            continue
        bn.running_mean.copy_(stat.mean)
        bn.running_var.copy_(stat.var)
    if unused:
        logger.warning("precise BN: %d BN layer(s) never ran and keep their statistics: %s", len(unused),
                       ", ".join(unused))
    logger.info("precise BN: updated %d BN layers over %d batches", len(bn_layers) - len(unused), used)
    return used


def _too_few(got: int, num_iters: int) -> ValueError:
    return ValueError(f"precise BN needs {num_iters} batches but `batches` yielded only {got}: "
                      "pass a longer (or repeating) loader or lower num_iters")

"""Gradient checkpointing of a stage's blocks that leaves BatchNorm's running statistics as without it.

``torch.utils.checkpoint`` runs each block's forward twice in training (again during backward), so every
BatchNorm would fold the batch statistics into its running mean/var twice (a known trap, pytorch/pytorch
issue #96136). The recomputation here runs those layers with momentum 0: the same batch
statistics, an update that changes nothing; the random state is replayed (``preserve_rng_state``), so DropBlock
draws the same mask.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


@contextmanager
def frozen_running_stats(module: nn.Module) -> Iterator[None]:
    """Norm layers of ``module`` in training mode leave their running statistics as they are for the duration.

    Momentum 0 rather than ``track_running_stats=False``: the recomputation must run the very ops of the first
    forward (BatchNorm saves its running buffers for backward), only with an update that changes nothing.
    """
    tracking = [m for m in module.modules()
                if isinstance(m, nn.modules.batchnorm._NormBase) and m.training and m.track_running_stats]
    saved = [(m.momentum, m.num_batches_tracked.clone()) for m in tracking]
    for m in tracking:
        m.momentum = 0.0  # running ← (1 − 0)·running + 0·batch
    try:
        yield
    finally:
        for m, (momentum, count) in zip(tracking, saved):
            m.momentum = momentum
            m.num_batches_tracked.copy_(count)


def checkpoint_blocks(stage: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """Run ``stage`` block by block, keeping only each block's input for backward and recomputing the rest."""
    for block in stage:
        x = checkpoint(block, x, use_reentrant=False,
                       context_fn=lambda block=block: (nullcontext(), frozen_running_stats(block)))
    return x

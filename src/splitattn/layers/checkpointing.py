"""Gradient checkpointing of a stage's blocks that leaves BatchNorm's running statistics as without it.

``torch.utils.checkpoint`` runs each block's forward twice in training (again during backward), so every
BatchNorm would fold the batch statistics into its running mean/var twice (a known trap, pytorch/pytorch
issue #96136). The recomputation here runs those layers with momentum 0: the same batch
statistics, an update that changes nothing; the random state is replayed (``preserve_rng_state``), so DropBlock
draws the same mask.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


class frozen_running_stats:  # noqa: N801  (used as a context manager, like torch.no_grad)
    """Norm layers of ``module`` in training mode leave their running statistics as they are inside the block.

    Momentum 0 rather than ``track_running_stats=False``: the recomputation must run the very ops of the first
    forward (BatchNorm saves its running buffers for backward), only with an update that changes nothing.
    Re-enterable: torch may recompute a block more than once (a custom autograd function inside it).
    """

    def __init__(self, module: nn.Module):
        self.module = module
        self._saved: list[list[tuple[nn.Module, float | None, torch.Tensor]]] = []

    def __enter__(self) -> None:
        tracking = [m for m in self.module.modules()
                    if isinstance(m, nn.modules.batchnorm._NormBase) and m.training and m.track_running_stats]
        self._saved.append([(m, m.momentum, m.num_batches_tracked.clone()) for m in tracking])
        for m in tracking:
            m.momentum = 0.0  # running ← (1 − 0)·running + 0·batch

    def __exit__(self, *exc) -> None:
        for m, momentum, count in self._saved.pop():
            m.momentum = momentum
            m.num_batches_tracked.copy_(count)


def checkpoint_blocks(stage: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """Run ``stage`` block by block, keeping only each block's input for backward and recomputing the rest."""
    for block in stage:
        x = checkpoint(block, x, use_reentrant=False,
                       context_fn=lambda block=block: (nullcontext(), frozen_running_stats(block)))
    return x

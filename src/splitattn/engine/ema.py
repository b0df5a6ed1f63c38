"""Model EMA: an exponential moving average of the training weights, evaluated and saved beside them.

The average of the iterates (Polyak & Juditsky 1992, https://doi.org/10.1137/0330046) in its exponential form,
as TensorFlow's ``tf.train.ExponentialMovingAverage`` and timm's ``ModelEmaV3`` keep it
(https://github.com/huggingface/pytorch-image-models/blob/main/timm/utils/model_ema.py). Update ``k``
(k = 1, 2, …, counted over the whole run, resumes included; one every ``engine.ema_every_steps`` optimizer steps)::

    EMA ← β_k · EMA + (1 − β_k) · θ          (torch.lerp with weight 1 − β_k)
    β_1 = 0                                   the first update copies the weights (timm's ``get_decay``)
    β_k = min(decay, 1 − (1 + (k − 1)/γ)^−p)  with ``engine.ema_warmup`` (timm's warm-up, after @crowsonkb;
                                              γ = 1, p = 1 gives the plain mean of the updates' weights)
    β_k = decay                               without

Buffers: floating-point ones (BatchNorm's running mean and variance) are averaged like the parameters, the others
(``num_batches_tracked``) copied from the model. This is timm's default (``ModelEmaV3(exclude_buffers=False)``, as
V2) and torchvision's (``references/classification/utils.py``, ``ExponentialMovingAverage`` =
``AveragedModel(use_buffers=True)``): copying the live model's statistics instead would pair the averaged weights
with the statistics of the last step's weights. The EMA keeps the model's dtypes (the engine trains fp32 weights,
AMP or not), so no update underflows.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from copy import deepcopy

import torch
from torch import nn

from .config import EngineConfig


class ModelEma:
    """An EMA of ``model`` (the plain module, not a DDP / compiled wrapper), kept on ``device``."""

    def __init__(self, model: nn.Module, decay: float, warmup: bool = False, gamma: float = 1.0,
                 power: float = 2 / 3, device: torch.device | str | None = None):
        # β_1 = 0, so the copy's starting values never count: only the updates' weights do
        self.module = deepcopy(model).eval().requires_grad_(False)
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.module.to(self.device)
        self.decay, self.warmup, self.gamma, self.power = decay, warmup, gamma, power
        self.updates = 0

    def decay_at(self, k: int) -> float:
        """β_k of update ``k`` (1-based)."""
        if k <= 1:
            return 0.0
        if self.warmup:
            return min(self.decay, 1.0 - (1.0 + (k - 1) / self.gamma) ** -self.power)
        return self.decay

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """One update towards ``model``'s current weights (the module the EMA was made from)."""
        self.updates += 1
        beta = self.decay_at(self.updates)
        live = model.state_dict()
        averaged, targets, seen = [], [], set()
        for name, value in self.module.state_dict().items():  # views of the EMA's tensors: updated in place
            if value.data_ptr() in seen:  # a tied tensor listed twice must not be averaged twice
                continue
            seen.add(value.data_ptr())
            source = live[name].to(self.device)
            if value.is_floating_point() and beta > 0:
                averaged.append(value)
                targets.append(source)
            else:
                value.copy_(source)
        if averaged:
            torch._foreach_lerp_(averaged, targets, 1.0 - beta)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.module.state_dict()

    def load_state_dict(self, weights: dict[str, torch.Tensor], updates: int) -> None:
        self.module.load_state_dict(weights)
        self.updates = int(updates)

    @contextmanager
    def placed(self, device: torch.device) -> Iterator[nn.Module]:
        """The EMA module on ``device`` (an evaluation runs where training does), back home and in eval mode after.

        What the evaluation changes stays: detection's precise BN re-measures the EMA's BatchNorm statistics at its
        weights, as it does the model's, so a checkpoint holds the EMA that was evaluated.
        """
        self.module.to(device)
        try:
            yield self.module
        finally:
            self.module.to(self.device).eval()


def build_ema(model: nn.Module, e: EngineConfig, device: torch.device) -> ModelEma | None:
    """The run's EMA as the engine config ``e`` says, or None when ``e.ema_decay`` is 0."""
    if e.ema_decay == 0:
        return None
    return ModelEma(model, e.ema_decay, e.ema_warmup, e.ema_warmup_gamma, e.ema_warmup_power,
                    device=torch.device("cpu") if e.ema_device == "cpu" else device)

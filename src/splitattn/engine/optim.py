"""Optimizer parameter groups shared by the tasks."""

from __future__ import annotations

from torch import nn

_DECAYED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: conv / linear weights with ``weight_decay``, every other parameter (norm γ/β, biases) without.

    Chosen by module type, not by name: the official torch filter (``'bn' in name``) missed the stem and
    shortcut BNs of ResNeSt.
    """
    decay, seen = [], set()
    for module in model.modules():
        if isinstance(module, _DECAYED) and module.weight.requires_grad:
            decay.append(module.weight)
            seen.add(id(module.weight))
    no_decay = [p for p in model.parameters() if p.requires_grad and id(p) not in seen]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]

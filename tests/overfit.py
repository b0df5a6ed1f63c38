"""The few-step training loop the detection tests share: SGD with momentum and a 5-step linear warm-up."""

from __future__ import annotations

import math

import torch


def overfit(model: torch.nn.Module, images: list, targets: list, steps: int, lr: float = 0.01) -> list[float]:
    """Train ``model`` on one fixed batch for ``steps`` steps; the total loss of each step (every term finite)."""
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr, momentum=0.9)
    model.train()
    history = []
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / 5)
        losses = model(images, targets)
        total = sum(losses.values())
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        history.append(total.item())
        assert all(math.isfinite(v.item()) for v in losses.values()), {k: v.item() for k, v in losses.items()}
    return history

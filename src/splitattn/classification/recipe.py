"""The pieces of the training recipe, each a small function checked against its definition.

* learning rate: linear warm-up from 0, then cosine to 0, per iteration (Gluon ``CosineScheduler``
  with ``warmup_begin_lr=0``), base lr = 0.1 · B / 256;
* weight decay only on conv / linear weights (:func:`splitattn.engine.optim.parameter_groups`);
* label smoothing folded into the one-hot target (on = 1 − ε + ε/K, off = ε/K) and mixup with the
  reversed batch, λ ~ Beta(α, α) per batch, as Gluon's ``train.py``; CutMix (Yun et al. 2019, not in the
  released recipe) pastes a box of the reversed batch instead and mixes the targets by the box's area;
* DropBlock probability ramped linearly to its final value over the epochs (``DropBlockScheduler``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def learning_rate(update: int, base_lr: float, total_updates: int, warmup_updates: int) -> float:
    """Learning rate of the ``update``-th optimizer step (1-based)."""
    if update <= warmup_updates:
        return base_lr * update / warmup_updates
    progress = (update - warmup_updates) / max(1, total_updates - warmup_updates)
    return 0.5 * base_lr * (1.0 + math.cos(math.pi * min(1.0, progress)))


def drop_block_prob(epoch: int, epochs: int, final: float) -> float:
    """DropBlock probability for ``epoch`` (0-based): ``final · (epoch + 1) / epochs``."""
    return final * (epoch + 1) / epochs


def mixup_active(epoch: int, epochs: int, alpha: float, off_epochs: int) -> bool:
    """Mixup is on except in the last ``off_epochs`` epochs (0 = never off, the released recipe)."""
    return alpha > 0 and epoch < epochs - off_epochs


def smooth_one_hot(labels: torch.Tensor, num_classes: int, smoothing: float) -> torch.Tensor:
    """``(1 − ε)·onehot + ε/K``: on = 1 − ε + ε/K, off = ε/K."""
    target = torch.full((labels.shape[0], num_classes), smoothing / num_classes, device=labels.device)
    return target.scatter_(1, labels[:, None], 1.0 - smoothing + smoothing / num_classes)


def mixup(images: torch.Tensor, targets: torch.Tensor, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Mix every sample with its partner in the reversed batch: ``λ·x + (1 − λ)·x[::-1]``."""
    return lam * images + (1 - lam) * images.flip(0), lam * targets + (1 - lam) * targets.flip(0)


def cutmix(images: torch.Tensor, targets: torch.Tensor, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Paste a box of the reversed batch into every sample; targets mix by the pasted area (CutMix).

    The box has side ratio ``sqrt(1 − λ)`` and a uniform centre (torch's global RNG), clipped at the
    border, so the target weight is recomputed from the area actually pasted, as the paper's code does.
    """
    height, width = images.shape[-2:]
    ratio = math.sqrt(1.0 - lam)
    cut_h, cut_w = int(height * ratio), int(width * ratio)
    cy, cx = int(torch.randint(height, ())), int(torch.randint(width, ()))
    y0, y1 = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, height)
    x0, x1 = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, width)
    mixed = images.clone()
    mixed[..., y0:y1, x0:x1] = images.flip(0)[..., y0:y1, x0:x1]
    kept = 1.0 - (y1 - y0) * (x1 - x0) / (height * width)
    return mixed, kept * targets + (1 - kept) * targets.flip(0)


def mix_batch(images: torch.Tensor, targets: torch.Tensor, mixup_alpha: float,
              cutmix_alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixup or CutMix for one batch; with both on, each batch picks one by a fair coin (timm's default)."""
    use_cutmix = cutmix_alpha > 0 and (mixup_alpha <= 0 or bool(torch.rand(()) < 0.5))
    alpha = cutmix_alpha if use_cutmix else mixup_alpha
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    return (cutmix if use_cutmix else mixup)(images, targets, lam)


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ``−Σ_k target_k · log softmax(logits)_k`` (computed in fp32)."""
    return -(targets * F.log_softmax(logits.float(), dim=-1)).sum(-1).mean()

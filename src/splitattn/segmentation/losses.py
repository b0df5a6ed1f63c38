"""Segmentation losses: per-pixel cross-entropy (the paper's) with the auxiliary head, and optionally the
Lovász-softmax loss (Berman et al. 2018), a convex surrogate of each class's IoU that mIoU rewards directly."""

from __future__ import annotations

import torch
import torch.nn.functional as F

AUX_WEIGHT = 0.2  # PyTorch-Encoding's aux loss weight for the ResNeSt runs


def lovasz_softmax(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = 255) -> torch.Tensor:
    """Lovász-softmax over all pixels of the batch, averaged over the classes present in ``target``.

    Per class c: the errors |[y = c] − p_c| sorted in decreasing order, dotted with the gradient of the
    Jaccard loss along that order (Berman et al., "The Lovász-Softmax loss", CVPR 2018, Alg. 1). Ignored
    pixels get error 0 and no foreground, so they sort last and add nothing. All classes in one sort.
    """
    num_classes = logits.shape[1]
    probs = logits.float().softmax(1).permute(0, 2, 3, 1).reshape(-1, num_classes)
    target = target.reshape(-1)
    valid = (target != ignore_index).unsqueeze(1)
    foreground = (F.one_hot(torch.where(valid[:, 0], target, 0), num_classes).bool() & valid).float()
    errors = (foreground - probs).abs() * valid
    errors, order = errors.sort(0, descending=True)
    foreground = foreground.gather(0, order)
    total = foreground.sum(0)
    intersection = total - foreground.cumsum(0)
    union = total + (1 - foreground).cumsum(0)
    jaccard = 1 - intersection / union
    gradient = torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]])
    per_class = (errors * gradient).sum(0)
    present = total > 0
    return per_class[present].mean() if bool(present.any()) else per_class.sum() * 0


def segmentation_loss(outputs: dict[str, torch.Tensor], target: torch.Tensor, ignore_index: int = 255,
                      aux_weight: float = AUX_WEIGHT, lovasz_weight: float = 0.0,
                      lovasz_stride: int = 1) -> torch.Tensor:
    """Per-pixel cross-entropy on ``out`` plus ``aux_weight`` × that of ``aux`` (ignored pixels skipped),
    plus ``lovasz_weight`` × :func:`lovasz_softmax` on ``out`` at every ``lovasz_stride``-th pixel along each
    axis (its sort costs most of the loss's time; the upsampled logits vary slowly between neighbours)."""
    loss = F.cross_entropy(outputs["out"], target, ignore_index=ignore_index)
    if "aux" in outputs:
        loss = loss + aux_weight * F.cross_entropy(outputs["aux"], target, ignore_index=ignore_index)
    if lovasz_weight:
        step = slice(None, None, lovasz_stride)
        loss = loss + lovasz_weight * lovasz_softmax(outputs["out"][..., step, step], target[..., step, step],
                                                     ignore_index)
    return loss

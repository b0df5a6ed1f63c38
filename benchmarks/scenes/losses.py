"""The Lovász-softmax term the scenes segmentation experiments tried beside the paper's cross-entropy
(Berman et al., "The Lovász-Softmax loss", CVPR 2018): a convex surrogate of each class's IoU."""

from __future__ import annotations

import torch
import torch.nn.functional as F


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

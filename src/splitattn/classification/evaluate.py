"""Top-1 / top-5 evaluation, summed over all processes."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ..engine.distributed import all_reduce_sum
from ..engine.loop import autocast


@torch.no_grad()
def evaluate(model: nn.Module, batches, device: torch.device, amp: str = "none", channels_last: bool = False,
             keep_examples: int = 0, progress: bool = False) -> dict:
    """Loss, top-1 and top-5 (%) over every batch of ``batches``; ``examples`` holds the first
    ``keep_examples`` (images, labels, probabilities) of this process for a predictions picture."""
    model.eval()
    totals = torch.zeros(5, dtype=torch.float64)  # loss sum, top-1 hits, top-5 hits, count, skipped
    examples = None
    for images, labels, skipped in tqdm(batches.batches(), total=len(batches), desc="eval", disable=not progress,
                                        leave=False):
        totals[4] += len(skipped)
        if len(labels) == 0:
            continue
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast(device, amp):
            logits = model(images)
        logits = logits.float()
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        hits = top == labels[:, None]
        totals[0] += F.cross_entropy(logits, labels, reduction="sum").item()
        totals[1] += hits[:, 0].sum().item()
        totals[2] += hits.any(dim=1).sum().item()
        totals[3] += len(labels)
        if keep_examples and examples is None:
            examples = (images[:keep_examples].float().cpu(), labels[:keep_examples].cpu(),
                        logits[:keep_examples].softmax(1).cpu())
    totals = all_reduce_sum(totals.to(device)).cpu()
    count = max(totals[3].item(), 1.0)
    return {"val_loss": totals[0].item() / count, "val_top1": 100 * totals[1].item() / count,
            "val_top5": 100 * totals[2].item() / count, "val_count": int(totals[3].item()),
            "val_skipped": int(totals[4].item()), "examples": examples}

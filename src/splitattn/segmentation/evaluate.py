"""pixAcc and mIoU of a segmenter over a dataset: a confusion matrix at the labels' original resolution,
summed over processes; single-scale, or multi-scale + flip with a sliding window for large images."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from tqdm import tqdm

from ..engine.loop import autocast
from .metrics import ConfusionMatrix, predict_logits


@torch.no_grad()
def evaluate_segmenter(model: nn.Module, dataset, device: torch.device, scales: Sequence[float] = (1.0,),
                       flip: bool = False, crop_size: int | None = None, base_size: int | None = None,
                       amp: str = "none", rank: int = 0, world: int = 1, progress: bool = True,
                       **predict_options) -> dict[str, float]:
    """``{"pixAcc", "mIoU", "mAcc", "IoU/<class>"…}`` (0..1) over ``dataset`` (image [0,1] CHW, label HW pairs).
    ``predict_options`` go to :func:`~.metrics.predict_logits` (``resize_side``, ``combine``, ``fit``, …)."""
    model.eval()
    matrix = ConfusionMatrix(dataset.num_classes, dataset.ignore_index)
    indices = range(rank, len(dataset), world)
    for index in tqdm(indices, desc="eval", disable=not progress or rank != 0, leave=False):
        image, label = dataset[index]
        with autocast(device, amp):
            logits = predict_logits(model, image.to(device), dataset.num_classes, scales=scales, flip=flip,
                                    crop_size=crop_size, base_size=base_size, **predict_options)
        matrix.update(logits.argmax(0).cpu(), label)
    matrix.all_reduce()
    summary = matrix.summary(getattr(dataset, "class_names", None))
    flat = {"pixAcc": summary["pixel_accuracy"], "mIoU": summary["mean_iou"], "mAcc": summary["mean_accuracy"]}
    flat.update({f"IoU/{name}": value for name, value in summary["iou"].items()})
    return flat

"""pixAcc and mIoU of a segmenter over a dataset: a confusion matrix at the labels' original resolution,
summed over processes; single-scale, or multi-scale + flip with a sliding window for large images."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from tqdm import tqdm

from ..engine.evaluate import autocast
from .metrics import ConfusionMatrix, predict_logits
from .refine import BilateralRefine


@torch.no_grad()
def evaluate_segmenter(model: nn.Module, dataset, device: torch.device, scales: Sequence[float] = (1.0,),
                       flip: bool = False, crop_size: int | None = None, base_size: int | None = None,
                       amp: str = "none", rank: int = 0, world: int = 1, progress: bool = True,
                       refine: BilateralRefine | None = None) -> dict[str, float]:
    """``{"pixAcc", "mIoU", "IoU/<class>"…}`` (0..1) over ``dataset`` (image [0,1] CHW, label HW pairs).

    ``refine`` (steps > 0): the metrics of the colour-guided refinement of the softmax of the (multi-scale)
    logits, with ``"pixAcc_unrefined"`` / ``"mIoU_unrefined"`` of the same pass's plain argmax beside them."""
    model.eval()
    matrix = ConfusionMatrix(dataset.num_classes, dataset.ignore_index)
    refining = refine is not None and refine.steps > 0
    unrefined = ConfusionMatrix(dataset.num_classes, dataset.ignore_index) if refining else None
    indices = range(rank, len(dataset), world)
    for index in tqdm(indices, desc="eval", disable=not progress or rank != 0, leave=False):
        image, label = dataset[index]
        with autocast(device, amp):
            logits = predict_logits(model, image.to(device), dataset.num_classes, scales=scales, flip=flip,
                                    crop_size=crop_size, base_size=base_size)
        if refining:
            unrefined.update(logits.argmax(0).cpu(), label)
            logits = refine(logits.float().softmax(0), image)
        matrix.update(logits.argmax(0).cpu(), label)
    matrix.all_reduce()
    summary = matrix.summary(getattr(dataset, "class_names", None))
    flat = {"pixAcc": summary["pixel_accuracy"], "mIoU": summary["mean_iou"], "mAcc": summary["mean_accuracy"]}
    flat.update({f"IoU/{name}": value for name, value in summary["iou"].items()})
    if refining:
        unrefined.all_reduce()
        flat.update({"pixAcc_unrefined": unrefined.pixel_accuracy(), "mIoU_unrefined": unrefined.mean_iou()})
    return flat

"""COCO evaluation with pycocotools: bbox and segm AP, AP50, AP75, APs/m/l.

Predictions are gathered from every process and scored once, on the main process, against the
dataset's checked annotations (crowd regions kept, malformed ones dropped and reported when the dataset
was read: :meth:`splitattn.detection.data.CocoDetection.coco_ground_truth`).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterable, Sequence

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from ..engine.distributed import gather_objects
from ..engine.loop import autocast
from ..optional import require

METRIC_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def predictions_to_coco(prediction: dict[str, torch.Tensor], image_id: int, label_to_cat_id: Sequence[int],
                        mask_threshold: float = 0.5) -> list[dict]:
    """One image's model output → COCO result records (bbox xywh; segm as RLE when masks are present)."""
    boxes = prediction["boxes"].detach().float().cpu()
    scores = prediction["scores"].detach().float().cpu().tolist()
    labels = prediction["labels"].detach().cpu().tolist()
    xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], 1).tolist()
    rles = []
    if "masks" in prediction:
        mask_utils = require("pycocotools.mask", "COCO mask evaluation")
        binary = (prediction["masks"][:, 0] > mask_threshold).cpu().numpy().astype(np.uint8)
        rles = mask_utils.encode(np.asfortranarray(binary.transpose(1, 2, 0))) if len(binary) else []
    records = []
    for i, (box, score, label) in enumerate(zip(xywh, scores, labels)):
        record = {"image_id": int(image_id), "category_id": int(label_to_cat_id[label]), "bbox": box,
                  "score": float(score)}
        if rles:
            rle = dict(rles[i])
            rle["counts"] = rle["counts"].decode("ascii")
            record["segmentation"] = rle
        records.append(record)
    return records


def load_coco(annotations: str | dict):
    """pycocotools' index of an annotation file or a COCO dict, without its console chatter."""
    coco = require("pycocotools.coco", "COCO evaluation")
    with contextlib.redirect_stdout(io.StringIO()):
        if isinstance(annotations, dict):
            index = coco.COCO()
            index.dataset = annotations
            index.createIndex()
            return index
        return coco.COCO(str(annotations))


def coco_metrics(coco_gt, results: list[dict], iou_type: str, image_ids: Iterable[int] | None = None,
                 verbose: bool = False) -> dict[str, float]:
    """AP / AP50 / AP75 / APs / APm / APl (0..1) for ``iou_type`` 'bbox' or 'segm'.

    No predictions at all score 0 (pycocotools cannot load an empty result list).
    """
    if not results:
        return dict.fromkeys(METRIC_NAMES, 0.0)
    quiet = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
    with quiet:
        coco_dt = coco_gt.loadRes(results)
        evaluator = require("pycocotools.cocoeval", "COCO evaluation").COCOeval(coco_gt, coco_dt, iou_type)
        if image_ids is not None:
            evaluator.params.imgIds = sorted(set(int(i) for i in image_ids))
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    # pycocotools reports -1 where no ground truth of that size exists: keep -1 so it is not read as 0 %
    return {name: float(value) for name, value in zip(METRIC_NAMES, evaluator.stats[:6])}


def _gather(records: list) -> list:
    return [r for part in gather_objects(records) for r in part]


@torch.no_grad()
def evaluate_detector(model: nn.Module, dataset, device: torch.device, amp: str = "none", batch_size: int = 4,
                      rank: int = 0, world: int = 1, progress: bool = True, workers: int = 0) -> dict[str, float]:
    """Run ``model`` over ``dataset`` (a :class:`splitattn.detection.data.CocoDetection`) and score it.

    Returns ``bbox_AP`` … (and ``segm_*`` for mask models) on the main process, {} elsewhere.
    """
    from .data import collate_detection

    model.eval()
    indices = list(range(rank, len(dataset), world))
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, indices), batch_size=batch_size,
                                         collate_fn=collate_detection, num_workers=workers)
    records, image_ids, has_masks = [], [], False
    for images, targets in tqdm(loader, desc="eval", disable=not progress or rank != 0, leave=False):
        with autocast(device, amp):
            outputs = model([img.to(device) for img in images])
        for output, target in zip(outputs, targets):
            image_id = int(target["image_id"])
            image_ids.append(image_id)
            has_masks = has_masks or "masks" in output
            records += predictions_to_coco(output, image_id, dataset.label_to_cat_id)
    records, image_ids = _gather(records), _gather(image_ids)
    if rank != 0:
        return {}
    coco_gt = load_coco(dataset.coco_ground_truth())
    metrics = {f"bbox_{k}": v for k, v in coco_metrics(coco_gt, records, "bbox", image_ids).items()}
    if has_masks:
        metrics.update({f"segm_{k}": v for k, v in coco_metrics(coco_gt, records, "segm", image_ids).items()})
    metrics["detections"] = len(records)
    return metrics

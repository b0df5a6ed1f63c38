"""Panoptic Quality of a Panoptic FPN on a :class:`~.panoptic_data.CocoPanoptic` set, through COCO panoptic files.

What detectron2's ``COCOPanopticEvaluator`` does
(https://github.com/facebookresearch/detectron2/blob/main/detectron2/evaluation/panoptic_evaluation.py): each
image's ``panoptic_seg`` / ``segments_info`` (contiguous thing ids, "separated" stuff classes) is mapped to dataset
category ids and written as a COCO panoptic PNG (named after the ground-truth PNG) plus one predictions json, then
scored by panopticapi's ``pq_compute`` rules
(https://github.com/cocodataset/panopticapi/blob/master/panopticapi/evaluation.py, re-implemented in
:mod:`.panoptic_quality`). Unlike detectron2 the files are kept: ``out_dir`` receives

    predictions.json     {"annotations", "categories"}: one record per image, dataset category ids
    predictions/*.png    the predicted segment ids, RGB-encoded
    ground_truth.json    the dataset's checked json (:meth:`CocoPanoptic.panoptic_ground_truth`), scored with the
                         dataset's PNG folder

so ``pq_compute(out_dir / "ground_truth.json", out_dir / "predictions.json", dataset.panoptic_dir)`` reproduces
the numbers. Every file is written through a temp file and a rename. Under torchrun every rank writes its own PNGs,
so ``out_dir`` must be one folder all ranks see (one machine, or a shared file system).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from ..engine.distributed import gather_objects
from ..engine.loop import autocast
from .panoptic_format import to_coco_panoptic, write_panoptic_png, write_predictions_json
from .panoptic_quality import pq_compute

__all__ = ["GROUND_TRUTH_JSON", "PREDICTIONS_JSON", "evaluate_panoptic", "panoptic_metrics", "pq_summary"]

PREDICTIONS_JSON = "predictions.json"
GROUND_TRUTH_JSON = "ground_truth.json"


def panoptic_metrics(results: dict) -> dict[str, float]:
    """:func:`pq_compute` results as detectron2's flat keys (``PQ``, ``SQ``, ``RQ``, ``PQ_th`` …, ``RQ_st``), but
    fractions in [0, 1] as the rest of splitattn reports (detectron2 multiplies by 100)."""
    return {f"{metric.upper()}{suffix}": float(results[group][metric])
            for group, suffix in (("All", ""), ("Things", "_th"), ("Stuff", "_st")) for metric in ("pq", "sq", "rq")}


def pq_summary(results: dict, images: int | None = None) -> str:
    """One line: ``PQ 41.52 SQ 79.80 RQ 50.13 | things (80) PQ … | stuff (53) PQ …`` (percent)."""
    parts = []
    for group, title in (("All", ""), ("Things", "things"), ("Stuff", "stuff")):
        r = results[group]
        head = f"{title} ({r['n']}) " if title else ""
        parts.append(f"{head}PQ {100 * r['pq']:.2f} SQ {100 * r['sq']:.2f} RQ {100 * r['rq']:.2f}")
    tail = f" over {images} images" if images is not None else ""
    return " | ".join(parts) + tail


def _check_out_dir(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"panoptic output {out_dir} is a file; pass a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise FileExistsError(f"panoptic output folder {out_dir} is not empty; pass overwrite=True (--overwrite) to "
                              "replace its predictions, or choose another folder")


def _clear_previous(out_dir: Path) -> None:
    """overwrite=True: remove what an earlier evaluation wrote here (only those files), so no stale PNG remains."""
    for name in (PREDICTIONS_JSON, GROUND_TRUTH_JSON):
        (out_dir / name).unlink(missing_ok=True)
    if (out_dir / "predictions").is_dir():
        for png in (out_dir / "predictions").glob("*.png"):
            png.unlink()


def _prediction_names(dataset) -> dict[int, str]:
    """image id → the predicted PNG's name: the ground-truth PNG's base name (detectron2: the image's stem + .png)."""
    names = {int(dataset.annotation(i)["image_id"]): Path(dataset.annotation(i)["file_name"]).name
             for i in range(len(dataset))}
    seen: dict[str, int] = {}
    for image_id, name in names.items():
        if name in seen:
            raise ValueError(f"{dataset.ann_file}: images {seen[name]} and {image_id} both have a panoptic PNG named "
                             f"{name}; give every annotation its own file_name")
        seen[name] = image_id
    return names


def _panoptic_output(output: dict, image_id: int) -> tuple[torch.Tensor, list[dict]]:
    if "panoptic_seg" not in output:
        raise ValueError(f"image {image_id}: the model's output has no 'panoptic_seg' (keys {sorted(output)}); "
                         "evaluate a Panoptic FPN (create_detector('panoptic_fpn', ...))")
    panoptic = output["panoptic_seg"]
    if isinstance(panoptic, (tuple, list)):  # detectron2's (panoptic_seg, segments_info) pair
        panoptic, segments = panoptic
    else:
        segments = output.get("segments_info")
    if segments is None:
        raise ValueError(f"image {image_id}: the model's output has no 'segments_info' listing the segments of "
                         "'panoptic_seg'")
    return panoptic, segments


def _write_json(path: Path, payload: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(payload), encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@torch.no_grad()
def evaluate_panoptic(model: nn.Module, dataset, out_dir: str | os.PathLike, device: torch.device | str = "cpu",
                      batch_size: int = 2, amp: str = "none", progress: bool = True, overwrite: bool = False,
                      rank: int = 0, world: int = 1, workers: int = 0) -> dict:
    """Run ``model`` over ``dataset`` (a :class:`~.panoptic_data.CocoPanoptic` built with ``train=False``), write the
    COCO panoptic predictions under ``out_dir`` and score them.

    ``out_dir`` must be empty or absent unless ``overwrite`` (then the files of an earlier evaluation there are
    replaced). The model takes a list of CHW images and returns per image ``panoptic_seg`` (H×W ids at the image's
    size, 0 = VOID) and ``segments_info`` in detectron2's PanopticFPN form (:mod:`.rcnn.panoptic`), mapped to
    dataset ids by ``dataset.contiguous_to_category_id``.

    Returns :func:`~.panoptic_quality.pq_compute`'s dict on the main process (``All`` / ``Things`` / ``Stuff``:
    ``pq``, ``sq``, ``rq`` fractions and ``n`` categories; ``per_class``), {} elsewhere; with ``progress`` a tqdm
    bar and a :func:`pq_summary` line.
    """
    from .data import collate_detection

    out_dir, device = Path(out_dir), torch.device(device)
    if getattr(dataset, "train", False):
        raise ValueError("evaluate_panoptic needs a dataset built with train=False (its training flips would "
                         "misplace the predictions)")
    names = _prediction_names(dataset)
    _check_out_dir(out_dir, overwrite)
    if rank == 0 and overwrite and out_dir.is_dir():
        _clear_previous(out_dir)
    gather_objects(None)  # every rank has checked out_dir before any writes to it
    pred_dir = out_dir / "predictions"
    pred_dir.mkdir(parents=True, exist_ok=True)

    model.eval()
    indices = list(range(rank, len(dataset), world))
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, indices), batch_size=batch_size,
                                         collate_fn=collate_detection, num_workers=workers)
    records = []
    for images, targets in tqdm(loader, desc="panoptic eval", disable=not progress or rank != 0, leave=False):
        with autocast(device, amp):
            outputs = model([img.to(device) for img in images])
        for image, output, target in zip(images, outputs, targets, strict=True):
            image_id = int(target["image_id"])
            panoptic, segments = _panoptic_output(output, image_id)
            if tuple(panoptic.shape) != tuple(image.shape[-2:]):
                raise ValueError(f"image {image_id}: panoptic_seg is {tuple(panoptic.shape)} but the image is "
                                 f"{tuple(image.shape[-2:])}; predict at the original image size")
            record, ids = to_coco_panoptic(panoptic, segments, image_id, names[image_id],
                                           dataset.contiguous_to_category_id)
            write_panoptic_png(pred_dir / names[image_id], ids)
            records.append(record)
    records = [r for part in gather_objects(records) for r in part]
    if rank != 0:
        return {}
    records.sort(key=lambda r: r["image_id"])
    write_predictions_json(out_dir / PREDICTIONS_JSON, records, dataset.categories)
    _write_json(out_dir / GROUND_TRUTH_JSON, dataset.panoptic_ground_truth())
    results = pq_compute(out_dir / GROUND_TRUTH_JSON, out_dir / PREDICTIONS_JSON, gt_folder=dataset.panoptic_dir,
                         pred_folder=pred_dir, progress=progress)
    if progress:
        tqdm.write(f"panoptic: {pq_summary(results, len(records))} ({out_dir})")
    return results

"""Panoptic Quality: PQ = SQ x RQ (Kirillov et al., "Panoptic Segmentation", CVPR 2019, arXiv:1801.00868).

A re-implementation of panopticapi's evaluation
(https://github.com/cocodataset/panopticapi/blob/master/panopticapi/evaluation.py, ``pq_compute`` and
``pq_compute_single_core``), rule for rule:

* segment id 0 is VOID; the ground-truth ``area`` of a segment is taken from its json record;
* a ground-truth and a predicted segment of the same category match when IoU > 0.5, where
  ``IoU = inter / (pred_area + gt_area - inter - pred∩VOID)``: predicted pixels over VOID leave the union;
* crowd ground truth (``iscrowd`` 1) never matches and is never a false negative;
* an unmatched prediction is not a false positive when more than half of it lies on VOID plus the crowd
  region of its own category;
* a category counts in an average only if it has tp + fp + fn > 0.

All values are fractions in [0, 1]; panopticapi returns the same fractions and only its printed table
multiplies them by 100 (as does detectron2's ``COCOPanopticEvaluator``).
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .panoptic_format import read_panoptic_png

VOID = 0
OFFSET = 256**3  # one past the largest RGB-encodable id: gt * OFFSET + pred is a unique pair key

Categories = Mapping[int, dict] | Sequence[dict]


@dataclass
class CategoryStat:
    """Counts of one category: matched pairs, their summed IoU, unmatched predictions and ground truth."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    iou: float = 0.0

    def __iadd__(self, other: CategoryStat) -> CategoryStat:
        self.tp += other.tp
        self.fp += other.fp
        self.fn += other.fn
        self.iou += other.iou
        return self


class PQStat:
    """Per-category :class:`CategoryStat`, summed over images with ``+=``."""

    def __init__(self) -> None:
        self.per_category: defaultdict[int, CategoryStat] = defaultdict(CategoryStat)

    def __getitem__(self, category_id: int) -> CategoryStat:
        return self.per_category[category_id]

    def __iadd__(self, other: PQStat) -> PQStat:
        for category_id, stat in other.per_category.items():
            self.per_category[category_id] += stat
        return self


def pq_single_image(gt_ids: np.ndarray | torch.Tensor, gt_segments: Sequence[dict],
                    pred_ids: np.ndarray | torch.Tensor, pred_segments: Sequence[dict], categories: Categories,
                    where: str = "image") -> PQStat:
    """One image's counts from its HxW id maps and COCO panoptic ``segments_info`` lists.

    ``categories`` (``{id: {"isthing": 0|1, ...}}`` or the json's category list) is used to reject unknown
    predicted categories. Predicted areas are counted from ``pred_ids``; a ground-truth segment without
    ``area`` gets its pixel count. ``where`` names the image in error messages.
    """
    gt_ids, pred_ids = _as_ids(gt_ids, "ground truth", where), _as_ids(pred_ids, "prediction", where)
    if gt_ids.shape != pred_ids.shape:
        raise ValueError(f"{where}: prediction is {pred_ids.shape[1]}x{pred_ids.shape[0]} pixels but the ground "
                         f"truth is {gt_ids.shape[1]}x{gt_ids.shape[0]}; predict at the original image size")
    categories = _category_table(categories)
    gt_segms = {int(seg["id"]): seg for seg in gt_segments}
    pred_segms = {int(seg["id"]): seg for seg in pred_segments}
    pred_area = _checked_prediction_areas(pred_ids, pred_segms, categories, where)

    # every (gt id, pred id) pair's pixel count in one pass, as panopticapi does
    labels, counts = np.unique(gt_ids * OFFSET + pred_ids, return_counts=True)
    overlap = {(int(label // OFFSET), int(label % OFFSET)): int(count) for label, count in zip(labels, counts)}
    gt_area = defaultdict(int)
    for (gt_label, _), count in overlap.items():
        gt_area[gt_label] += count
    gt_area.update({label: int(seg["area"]) for label, seg in gt_segms.items() if "area" in seg})

    stat = PQStat()
    gt_matched, pred_matched = set(), set()
    for (gt_label, pred_label), inter in overlap.items():
        if gt_label not in gt_segms or pred_label not in pred_segms:
            continue
        gt_seg, category_id = gt_segms[gt_label], pred_segms[pred_label]["category_id"]
        if _is_crowd(gt_seg) or gt_seg["category_id"] != category_id:
            continue
        union = pred_area[pred_label] + gt_area[gt_label] - inter - overlap.get((VOID, pred_label), 0)
        iou = inter / union
        if iou > 0.5:  # strictly: above one half a segment can match at most one other (Kirillov et al. thm 1)
            stat[category_id].tp += 1
            stat[category_id].iou += iou
            gt_matched.add(gt_label)
            pred_matched.add(pred_label)

    crowd_of_category = {}
    for gt_label, gt_seg in gt_segms.items():
        if gt_label in gt_matched:
            continue
        if _is_crowd(gt_seg):
            crowd_of_category[gt_seg["category_id"]] = gt_label  # panopticapi keeps one crowd id per category
            continue
        stat[gt_seg["category_id"]].fn += 1

    for pred_label, pred_seg in pred_segms.items():
        if pred_label in pred_matched:
            continue
        ignored = overlap.get((VOID, pred_label), 0)
        if pred_seg["category_id"] in crowd_of_category:
            ignored += overlap.get((crowd_of_category[pred_seg["category_id"]], pred_label), 0)
        if ignored / pred_area[pred_label] > 0.5:  # mostly unlabelled or crowd: not evidence of a wrong segment
            continue
        stat[pred_seg["category_id"]].fp += 1
    return stat


def pq_per_class(stat: PQStat, categories: Categories) -> dict[int, dict[str, float]]:
    """``{category id: {"pq", "sq", "rq"}}``; a category with no tp, fp or fn gets zeros (as panopticapi)."""
    return {cat_id: _scores(stat[cat_id]) or {"pq": 0.0, "sq": 0.0, "rq": 0.0}
            for cat_id in _category_table(categories)}


def pq_average(stat: PQStat, categories: Categories, isthing: bool | None = None) -> dict[str, float]:
    """Mean PQ, SQ, RQ over the categories (things only, stuff only, or all for None) that have tp+fp+fn > 0.

    ``n`` is the number of categories averaged; with none, all three are 0.0 (panopticapi divides by zero).
    """
    totals = {"pq": 0.0, "sq": 0.0, "rq": 0.0}
    n = 0
    for cat_id, info in _category_table(categories).items():
        if isthing is not None and (info["isthing"] == 1) != isthing:
            continue
        scores = _scores(stat[cat_id])
        if scores is None:
            continue
        n += 1
        for key in totals:
            totals[key] += scores[key]
    return {**{key: (total / n if n else 0.0) for key, total in totals.items()}, "n": n}


def pq_compute(gt_json: str | os.PathLike, pred_json: str | os.PathLike, gt_folder: str | os.PathLike | None = None,
               pred_folder: str | os.PathLike | None = None, progress: bool = True) -> dict:
    """PQ of a COCO panoptic predictions json + PNG folder against the ground truth's, as panopticapi's ``pq_compute``.

    A folder defaults to its json's path without ``.json``; a ``file_name`` with a folder part is used as
    is. Categories come from the ground-truth json; predictions for images absent from it are ignored.
    Returns ``{"All", "Things", "Stuff": {"pq", "sq", "rq", "n"}, "per_class": {category id: {...}}}`` as
    fractions in [0, 1]. Malformed input raises ValueError naming the file.
    """
    gt_json, pred_json = Path(gt_json), Path(pred_json)
    gt_data, pred_data = _load_json(gt_json, "ground truth"), _load_json(pred_json, "predictions")
    gt_folder = Path(gt_folder) if gt_folder is not None else gt_json.with_suffix("")
    pred_folder = Path(pred_folder) if pred_folder is not None else pred_json.with_suffix("")
    for folder, role, argument in ((gt_folder, "ground-truth", "gt_folder"), (pred_folder, "predicted", "pred_folder")):
        if not folder.is_dir():
            raise ValueError(f"folder {folder} with the {role} PNGs does not exist; pass its path as {argument}")
    categories = _category_table(gt_data["categories"])
    pairs = _pair_annotations(gt_data["annotations"], pred_data["annotations"], gt_json, pred_json)

    stat = PQStat()
    for gt_ann, pred_ann in tqdm(pairs, desc="PQ", disable=not progress, leave=False):
        gt_png = _png_path(gt_folder, gt_ann["file_name"])
        pred_png = _png_path(pred_folder, pred_ann["file_name"])
        for png, role in ((gt_png, "ground-truth"), (pred_png, "predicted")):
            if not png.is_file():
                raise ValueError(f"{role} PNG {png} for image {gt_ann['image_id']} is missing; write it or fix "
                                 f"file_name in {gt_json if role == 'ground-truth' else pred_json}")
        where = f"image {gt_ann['image_id']} ({pred_png}, {pred_json.name})"
        stat += pq_single_image(read_panoptic_png(gt_png), gt_ann["segments_info"], read_panoptic_png(pred_png),
                                pred_ann["segments_info"], categories, where=where)

    results = {name: pq_average(stat, categories, isthing)
               for name, isthing in (("All", None), ("Things", True), ("Stuff", False))}
    results["per_class"] = pq_per_class(stat, categories)
    return results


def _scores(cat: CategoryStat) -> dict[str, float] | None:
    # same expression order as panopticapi's PQStat.pq_average, so the floats agree bit for bit
    if cat.tp + cat.fp + cat.fn == 0:
        return None
    return {"pq": cat.iou / (cat.tp + 0.5 * cat.fp + 0.5 * cat.fn), "sq": cat.iou / cat.tp if cat.tp != 0 else 0.0,
            "rq": cat.tp / (cat.tp + 0.5 * cat.fp + 0.5 * cat.fn)}


def _checked_prediction_areas(pred_ids: np.ndarray, pred_segms: dict[int, dict], categories: dict[int, dict],
                              where: str) -> dict[int, int]:
    """Pixel count of every predicted segment, after panopticapi's PNG / json consistency checks."""
    labels, counts = np.unique(pred_ids, return_counts=True)
    areas = {int(label): int(count) for label, count in zip(labels, counts) if label != VOID}
    unlisted = sorted(set(areas) - set(pred_segms))
    if unlisted:
        raise ValueError(f"{where}: segment ids {unlisted[:10]} are in the PNG but not in segments_info; list "
                         "them or set those pixels to 0 (VOID)")
    unknown = sorted({seg["category_id"] for label, seg in pred_segms.items()
                      if label in areas and seg["category_id"] not in categories})
    if unknown:
        raise ValueError(f"{where}: category ids {unknown} are not among the ground truth's categories; map "
                         "predictions to dataset category ids")
    absent = sorted(set(pred_segms) - set(areas))
    if absent:
        raise ValueError(f"{where}: segments_info lists ids {absent[:10]} that have no pixel in the PNG; drop "
                         "them from segments_info")
    return areas


def _pair_annotations(gt_annotations: list[dict], pred_annotations: list[dict], gt_json: Path,
                      pred_json: Path) -> list[tuple[dict, dict]]:
    by_image: dict = {}
    for ann in pred_annotations:
        if ann["image_id"] in by_image:
            raise ValueError(f"{pred_json} holds two predictions for image {ann['image_id']}; keep one per image")
        by_image[ann["image_id"]] = ann
    missing = [ann["image_id"] for ann in gt_annotations if ann["image_id"] not in by_image]
    if missing:
        raise ValueError(f"{pred_json} has no prediction for {len(missing)} of the {len(gt_annotations)} images "
                         f"of {gt_json} (e.g. image ids {missing[:5]}); predict every ground-truth image or "
                         "evaluate against a ground truth restricted to the predicted images")
    return [(ann, by_image[ann["image_id"]]) for ann in gt_annotations]


def _load_json(path: Path, role: str) -> dict:
    if not path.is_file():
        raise ValueError(f"{role} json {path} does not exist; check the path")
    with open(path) as handle:
        data = json.load(handle)
    required = ("annotations", "categories") if role == "ground truth" else ("annotations",)
    missing = [key for key in required if key not in data]
    if missing:
        raise ValueError(f"{role} json {path} has no {missing[0]!r} list; it is not a COCO panoptic json")
    return data


def _png_path(folder: Path, file_name: str) -> Path:
    # newer panopticapi: a file_name with a folder part is a path of its own
    return Path(file_name) if Path(file_name).parent != Path() else folder / file_name


def _category_table(categories: Categories) -> dict[int, dict]:
    if isinstance(categories, Mapping):
        return {int(cat_id): info for cat_id, info in categories.items()}
    return {int(info["id"]): info for info in categories}


def _is_crowd(segment: dict) -> bool:
    return segment.get("iscrowd", 0) == 1


def _as_ids(ids: np.ndarray | torch.Tensor, role: str, where: str) -> np.ndarray:
    if isinstance(ids, torch.Tensor):
        ids = ids.detach().cpu().numpy()
    ids = np.asarray(ids)
    if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"{where}: the {role} must be an HxW integer id map, got {ids.dtype} of shape {ids.shape}")
    ids = ids.astype(np.int64)
    if ids.size and (ids.min() < 0 or ids.max() >= OFFSET):
        raise ValueError(f"{where}: {role} ids must lie in [0, {OFFSET - 1}], got [{ids.min()}, {ids.max()}]")
    return ids

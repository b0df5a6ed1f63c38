"""COCO-format detection / instance-segmentation data for torchvision-style detectors.

:class:`CocoDetection` reads a COCO ``annotations.json`` plus an image folder and returns
``(image, target)`` pairs in the layout torchvision's detection models expect: ``boxes`` XYXY in
pixels, ``labels`` contiguous ``1..C`` (0 is the background), optional ``masks`` ``N×H×W`` uint8.
Every annotation is checked once, when the dataset is built, so the problem report is complete
before training starts; bad annotations are dropped and counted (``strict=True`` raises instead). The
same checks hold for validation files: :meth:`CocoDetection.coco_ground_truth` gives pycocotools the
kept annotations (crowd regions included, as COCO scores them), never the raw file, so a malformed
annotation cannot crash the evaluation or pass silently into AP. Images are not resized here: the
detector's ``GeneralizedRCNNTransform`` does (multi-scale) resizing.

:func:`coco_from_instances` / :func:`instance_annotation` build COCO dicts from binary masks (tight
boxes and compressed RLE), as the scene generator and the VOC-photo converter write them.
"""

from __future__ import annotations

import json
import math
import warnings
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from ..data.images import DatasetError, image_size, open_image
from ..optional import require

__all__ = ["CocoDetection", "coco_from_instances", "collate_detection", "decode_segmentation",
           "instance_annotation", "mask_extents"]

_MAX_EXAMPLES = 5
_PROBLEM_TEXT = {
    "unknown_image": "annotations whose image_id is not in 'images' (dropped)",
    "unknown_category": "annotations whose category_id is not in 'categories' (dropped)",
    "crowd": "crowd annotations, iscrowd=1 (excluded from the training targets, as the torchvision/detectron2 "
             "references do; kept as regions that evaluation ignores)",
    "malformed_bbox": "annotations without a valid [x, y, w, h] bbox (dropped)",
    "outside_box": "boxes entirely outside their image (dropped)",
    "degenerate_box": "boxes with width or height <= 1 px after clipping to the image (dropped)",
    "clipped_box": "boxes partly outside their image (clipped to it, kept)",
    "missing_segmentation": "annotations without a segmentation while masks=True (dropped; use masks=False "
                            "for a box-only dataset)",
    "bad_segmentation": "annotations with a malformed polygon / RLE segmentation (dropped)",
}


# --------------------------------------------------------------------------------------------- masks
def mask_extents(mask: np.ndarray) -> list[float]:
    """Tight COCO box ``[x, y, w, h]`` of a non-empty binary mask (exact pixel extents)."""
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    if ys.size == 0:
        raise ValueError("empty mask has no bounding box")
    return [float(xs[0]), float(ys[0]), float(xs[-1] - xs[0] + 1), float(ys[-1] - ys[0] + 1)]


def encode_mask(mask: np.ndarray) -> dict:
    """Compressed COCO RLE of a binary mask, with ``counts`` as ``str`` (JSON-serialisable)."""
    mask_utils = require("pycocotools.mask", "COCO masks")
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def instance_annotation(mask: np.ndarray, category_id: int, ann_id: int, image_id: int) -> dict:
    """A COCO annotation for one instance: tight box of ``mask``, its pixel count as area, RLE, iscrowd 0."""
    mask = np.asarray(mask, dtype=bool)
    return {"id": int(ann_id), "image_id": int(image_id), "category_id": int(category_id),
            "bbox": mask_extents(mask), "area": float(mask.sum()), "segmentation": encode_mask(mask),
            "iscrowd": 0}


def coco_from_instances(entries: Sequence[dict], categories: Sequence[dict] | Sequence[str],
                        first_image_id: int = 1, first_ann_id: int = 1) -> dict:
    """Build a COCO dict from ``entries``: dicts with ``file_name``, ``masks`` (N, H, W) bool and
    ``category_ids`` (N,) (``height``/``width`` default to the masks' shape; ``id`` to a running count).

    ``categories`` is either COCO category dicts or a list of names (ids ``1..C`` in order).
    Empty masks raise a ValueError (an instance needs at least one pixel).
    """
    if categories and isinstance(categories[0], str):
        categories = [{"id": i + 1, "name": name, "supercategory": ""} for i, name in enumerate(categories)]
    images, annotations = [], []
    ann_id = first_ann_id
    for index, entry in enumerate(entries):
        masks = np.asarray(entry["masks"], dtype=bool)
        cat_ids = [int(c) for c in entry["category_ids"]]
        if masks.ndim != 3 or len(masks) != len(cat_ids):
            raise ValueError(f"{entry['file_name']}: masks must be (N, H, W) with one category id each")
        height = int(entry.get("height", masks.shape[1]))
        width = int(entry.get("width", masks.shape[2]))
        image_id = int(entry.get("id", first_image_id + index))
        images.append({"id": image_id, "file_name": str(entry["file_name"]), "height": height, "width": width})
        for mask, cat_id in zip(masks, cat_ids):
            if not mask.any():
                raise ValueError(f"{entry['file_name']}: an instance of category {cat_id} has an empty mask")
            annotations.append(instance_annotation(mask, cat_id, ann_id, image_id))
            ann_id += 1
    return {"images": images, "annotations": annotations, "categories": [dict(c) for c in categories]}


def _check_segmentation(segm: Any, height: int, width: int) -> str | None:
    """None when ``segm`` is a decodable polygon list or RLE for an ``height × width`` image, else why not."""
    if isinstance(segm, list):
        if not segm:
            return "empty polygon list"
        for poly in segm:
            if not isinstance(poly, list) or len(poly) < 6 or len(poly) % 2:
                return "a polygon needs an even number (>= 6) of coordinates"
            if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in poly):
                return "a polygon has non-numeric or non-finite coordinates"
        return None
    if isinstance(segm, dict):
        size, counts = segm.get("size"), segm.get("counts")
        if not isinstance(size, (list, tuple)) or len(size) != 2 or [int(size[0]), int(size[1])] != [height, width]:
            return f"RLE size {size} does not match the image ({height}, {width})"
        if isinstance(counts, list):
            if not all(isinstance(c, int) and c >= 0 for c in counts) or sum(counts) != height * width:
                return "uncompressed RLE counts must be non-negative ints summing to height*width"
            return None
        if isinstance(counts, (str, bytes)) and counts:
            return None
        return "RLE without counts"
    return f"unsupported segmentation type {type(segm).__name__}"


def decode_segmentation(segm: Any, height: int, width: int) -> np.ndarray:
    """Binary mask (H, W) uint8 from a polygon list, an uncompressed RLE or a compressed RLE."""
    mask_utils = require("pycocotools.mask", "COCO masks")
    if isinstance(segm, list):  # polygons: one RLE per part, merged
        rle = mask_utils.merge(mask_utils.frPyObjects(segm, height, width))
    elif isinstance(segm["counts"], list):  # uncompressed RLE
        rle = mask_utils.frPyObjects(segm, height, width)
    else:
        counts = segm["counts"]
        rle = {"size": list(segm["size"]), "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    with warnings.catch_warnings():  # pycocotools' Cython decode trips numpy 2's __array__(copy=) deprecation
        warnings.filterwarnings("ignore", message=".*__array__ implementation", category=DeprecationWarning)
        mask = mask_utils.decode(rle)
    return np.ascontiguousarray(mask, dtype=np.uint8)


# ------------------------------------------------------------------------------------------- dataset
def problem_report(headline: str, problems: dict[str, int], examples: dict[str, list[str]],
                   texts: dict[str, str]) -> str:
    """``headline``, then each counted problem kind with its explanation and a few examples (the datasets'
    ``problem_report``)."""
    lines = [headline] + ([] if problems else ["  no problems found"])
    for kind, count in sorted(problems.items()):
        lines.append(f"  {kind}: {count} {texts.get(kind, '')}")
        lines.extend(f"    e.g. {example}" for example in examples.get(kind, []))
    return "\n".join(lines)


def _per_box_tensors(inputs) -> tuple:
    """What SanitizeBoundingBoxes filters along with the boxes (masks are found on their own).

    Module level, so the dataset pickles for spawned DataLoader workers."""
    target = inputs[1]
    return tuple(target[k] for k in ("labels", "area", "iscrowd"))


class CocoDetection(Dataset):
    """COCO detection / instance segmentation.

    ``dataset[i]`` is ``(image, target)``: ``image`` a float32 CHW :class:`tv_tensors.Image` in [0, 1]
    (grayscale, RGBA and palette files are converted to RGB); ``target`` a dict with ``boxes``
    (:class:`tv_tensors.BoundingBoxes`, XYXY float32, pixels), ``labels`` (int64, contiguous ``1..C``),
    ``masks`` (:class:`tv_tensors.Mask` uint8 N×H×W, only when ``masks=True``), ``image_id`` (int),
    ``area`` (float32) and ``iscrowd`` (int64, all 0: crowd regions are left out of the targets).

    Attributes: ``class_names`` (C names; label ``l`` is ``class_names[l - 1]``), ``num_classes``
    (C + 1, the background included: what torchvision's heads take), ``cat_id_to_label`` /
    ``label_to_cat_id`` (COCO category id ↔ label), ``image_ids``, ``problems`` (a Counter of the
    dropped / altered annotations, filled at construction) and :meth:`problem_report`.

    ``train=True`` adds a random horizontal flip (``flip_prob``) followed by ``SanitizeBoundingBoxes``
    (torchvision.transforms.v2); nothing is resized here.
    """

    def __init__(self, image_dir: str | Path, ann_file: str | Path, train: bool = False, masks: bool = True,
                 flip_prob: float = 0.5, strict: bool = False):
        self.image_dir, self.ann_file = Path(image_dir), Path(ann_file)
        self.train, self.masks, self.flip_prob, self.strict = train, masks, float(flip_prob), strict
        self.problems: Counter = Counter()
        self.problem_examples: dict[str, list[str]] = {}
        coco = self._load_json()

        categories = sorted(coco["categories"], key=lambda c: int(c["id"]))
        self.categories = categories
        self.cat_id_to_label = {int(c["id"]): i + 1 for i, c in enumerate(categories)}
        self.label_to_cat_id = {label: cat_id for cat_id, label in self.cat_id_to_label.items()}
        self.class_names = [str(c.get("name", c["id"])) for c in categories]
        self.num_classes = len(categories) + 1

        self._images: dict[int, dict] = {}
        for info in coco["images"]:
            missing = [k for k in ("id", "file_name") if k not in info]
            if missing:
                raise DatasetError(f"{self.ann_file}: an entry of 'images' lacks {missing}: {str(info)[:200]}")
            image_id = int(info["id"])
            if image_id in self._images:
                raise DatasetError(f"{self.ann_file}: image id {image_id} appears twice in 'images'")
            self._images[image_id] = dict(info)
        self.image_ids = sorted(self._images)
        self._check_files()

        per_image: dict[int, list[tuple]] = {i: [] for i in self.image_ids}
        self.num_annotations = len(coco["annotations"])
        self._ground_truth: list[dict] = []  # every kept annotation, crowd ones too: what evaluation scores against
        for ann in coco["annotations"]:
            kept = self._check_annotation(ann)
            if kept is None:
                continue
            (x1, y1, x2, y2), label, area, segm, ann_id = kept
            crowd = bool(int(ann.get("iscrowd", 0)))
            self._ground_truth.append({
                "id": len(self._ground_truth) + 1, "image_id": int(ann["image_id"]),
                "category_id": int(ann["category_id"]), "bbox": [x1, y1, x2 - x1, y2 - y1], "area": area,
                "iscrowd": int(crowd), **({"segmentation": segm} if self.masks else {})})
            if crowd:
                self._problem("crowd", ann)
            else:
                per_image[int(ann["image_id"])].append(kept)
        self._targets = {}
        for image_id, anns in per_image.items():
            boxes = np.array([a[0] for a in anns], dtype=np.float32).reshape(-1, 4)
            self._targets[image_id] = {
                "boxes": boxes,
                "labels": np.array([a[1] for a in anns], dtype=np.int64),
                "area": np.array([a[2] for a in anns], dtype=np.float32),
                "segmentations": [a[3] for a in anns],
                "ann_ids": [a[4] for a in anns],
            }
        self.num_kept = sum(len(t["labels"]) for t in self._targets.values())
        self.num_crowd = self.problems["crowd"]
        self.num_empty_images = sum(1 for t in self._targets.values() if len(t["labels"]) == 0)
        self._transform = self._build_transform() if train else None

    # ------------------------------------------------------------------------------------ scanning
    def _load_json(self) -> dict:
        if not self.ann_file.is_file():
            raise DatasetError(f"COCO annotation file {self.ann_file} does not exist")
        try:
            with open(self.ann_file, encoding="utf-8") as handle:
                coco = json.load(handle)
        except json.JSONDecodeError as err:
            raise DatasetError(f"{self.ann_file} is not valid JSON ({err})") from None
        if not isinstance(coco, dict):
            raise DatasetError(f"{self.ann_file} must hold a JSON object with 'images', 'annotations' and "
                             f"'categories', found a {type(coco).__name__}")
        missing = [k for k in ("images", "annotations", "categories") if not isinstance(coco.get(k), list)]
        if missing:
            raise DatasetError(f"{self.ann_file} is not a COCO instances file: it lacks the list(s) {missing} "
                             "(expected keys 'images', 'annotations', 'categories')")
        if not coco["categories"]:
            raise DatasetError(f"{self.ann_file} has an empty 'categories' list")
        for cat in coco["categories"]:
            if not isinstance(cat, dict) or "id" not in cat:
                raise DatasetError(f"{self.ann_file}: a category lacks an 'id': {str(cat)[:200]}")
        ids = [int(c["id"]) for c in coco["categories"]]
        if len(set(ids)) != len(ids):
            dupes = sorted(i for i in set(ids) if ids.count(i) > 1)
            raise DatasetError(f"{self.ann_file}: duplicate category ids {dupes}")
        return coco

    def _check_files(self) -> None:
        missing = []
        for image_id in self.image_ids:
            info = self._images[image_id]
            path = self.image_dir / info["file_name"]
            if not path.is_file():
                missing.append(path)
                continue
            if "height" not in info or "width" not in info:
                info["width"], info["height"] = image_size(path)
            info["height"], info["width"] = int(info["height"]), int(info["width"])
        if missing:
            shown = ", ".join(str(p) for p in missing[:3])
            raise DatasetError(f"{len(missing)} image file(s) listed in {self.ann_file} are missing, e.g. "
                                    f"{shown} (check image_dir={self.image_dir})")

    def _problem(self, kind: str, ann: dict, detail: str = "") -> None:
        where = f"annotation id {ann.get('id')} of image id {ann.get('image_id')}"
        if self.strict and kind not in ("crowd", "clipped_box"):
            raise DatasetError(f"{self.ann_file}: {where}: {_PROBLEM_TEXT[kind]}{': ' + detail if detail else ''}")
        self.problems[kind] += 1
        examples = self.problem_examples.setdefault(kind, [])
        if len(examples) < _MAX_EXAMPLES:
            examples.append(where + (f" ({detail})" if detail else ""))

    def _check_annotation(self, ann: dict) -> tuple | None:
        image_id = ann.get("image_id")
        if image_id is None or int(image_id) not in self._images:
            self._problem("unknown_image", ann)
            return None
        info = self._images[int(image_id)]
        cat_id = ann.get("category_id")
        if cat_id is None or int(cat_id) not in self.cat_id_to_label:
            self._problem("unknown_category", ann, f"category_id {cat_id}, image {info['file_name']}")
            return None
        bbox = ann.get("bbox")
        if (not isinstance(bbox, (list, tuple)) or len(bbox) != 4
                or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in bbox)):
            self._problem("malformed_bbox", ann, f"bbox {bbox!r}")
            return None
        height, width = info["height"], info["width"]
        x, y, w, h = (float(v) for v in bbox)
        x1, y1, x2, y2 = max(x, 0.0), max(y, 0.0), min(x + w, float(width)), min(y + h, float(height))
        if w > 0 and h > 0 and (x2 <= 0 or y2 <= 0 or x1 >= width or y1 >= height):
            self._problem("outside_box", ann, f"bbox {bbox} in a {width}x{height} image")
            return None
        if x2 - x1 <= 1 or y2 - y1 <= 1:
            self._problem("degenerate_box", ann, f"bbox {bbox} in a {width}x{height} image")
            return None
        if (x1, y1, x2, y2) != (x, y, x + w, y + h):
            self._problem("clipped_box", ann, f"bbox {bbox} in a {width}x{height} image")
        segm = ann.get("segmentation")
        if self.masks:
            if segm is None or (isinstance(segm, list) and not segm):
                self._problem("missing_segmentation", ann)
                return None
            why = _check_segmentation(segm, height, width)
            if why:
                self._problem("bad_segmentation", ann, why)
                return None
        area = float(ann["area"]) if isinstance(ann.get("area"), (int, float)) else (x2 - x1) * (y2 - y1)
        return (x1, y1, x2, y2), self.cat_id_to_label[int(cat_id)], area, segm, ann.get("id")

    # ------------------------------------------------------------------------------------ reporting
    def problem_report(self) -> str:
        """A readable summary of what was dropped / altered while reading the annotation file."""
        crowd = f" (+{self.num_crowd} crowd regions)" if self.num_crowd else ""
        return problem_report(f"{self.ann_file}: {len(self.image_ids)} images ({self.num_empty_images} without "
                              f"annotations), {self.num_kept} of {self.num_annotations} annotations kept{crowd}, "
                              f"{len(self.class_names)} classes", self.problems, self.problem_examples, _PROBLEM_TEXT)

    def coco_ground_truth(self) -> dict:
        """The checked annotations as a COCO dict (boxes clipped to their image, crowd regions kept): what
        pycocotools scores the predictions against."""
        images = [{k: v for k, v in self._images[i].items()} for i in self.image_ids]
        return {"images": images, "annotations": [dict(a) for a in self._ground_truth],
                "categories": [dict(c) for c in self.categories]}

    # ------------------------------------------------------------------------------------ items
    def _build_transform(self):
        from torchvision.transforms import v2

        return v2.Compose([v2.RandomHorizontalFlip(self.flip_prob),
                           v2.SanitizeBoundingBoxes(labels_getter=_per_box_tensors)])

    def __len__(self) -> int:
        return len(self.image_ids)

    def image_info(self, index: int) -> dict:
        return self._images[self.image_ids[index]]

    def load_image(self, index: int) -> Image.Image:
        info = self.image_info(index)
        path = self.image_dir / info["file_name"]
        image = open_image(path)
        if image.size != (info["width"], info["height"]):
            raise DatasetError(f"image {path} is {image.size[0]}x{image.size[1]} but {self.ann_file} says "
                               f"{info['width']}x{info['height']}")
        return image

    def __getitem__(self, index: int):
        from torchvision import tv_tensors

        image_id = self.image_ids[index]
        pil = self.load_image(index)
        width, height = pil.size
        image = tv_tensors.Image(torch.from_numpy(np.asarray(pil).copy()).permute(2, 0, 1).float().div_(255))
        raw = self._targets[image_id]
        n = len(raw["labels"])
        target = {
            "boxes": tv_tensors.BoundingBoxes(torch.from_numpy(raw["boxes"].copy()), format="XYXY",
                                              canvas_size=(height, width)),
            "labels": torch.from_numpy(raw["labels"].copy()),
            "image_id": int(image_id),
            "area": torch.from_numpy(raw["area"].copy()),
            "iscrowd": torch.zeros(n, dtype=torch.int64),
        }
        if self.masks:
            if n:
                masks = np.stack([decode_segmentation(s, height, width) for s in raw["segmentations"]])
            else:
                masks = np.zeros((0, height, width), np.uint8)
            target["masks"] = tv_tensors.Mask(torch.from_numpy(masks))
        if self._transform is not None:
            image, target = self._transform(image, target)
        return image, target


def collate_detection(batch: Sequence[tuple]) -> tuple[list, list]:
    """Detection batches stay lists: ``(images, targets)`` of per-image tensors / dicts."""
    images, targets = zip(*batch) if batch else ((), ())
    return list(images), list(targets)

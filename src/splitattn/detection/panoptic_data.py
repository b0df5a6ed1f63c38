"""COCO panoptic data for Panoptic FPN: instance targets and "separated" semantic labels from the panoptic PNGs.

:class:`CocoPanoptic` reads the real COCO panoptic layout (https://cocodataset.org/#format-data): a json
(``panoptic_{split}2017.json``) with ``images``, ``annotations`` (one per image: ``file_name`` of its PNG and
``segments_info`` ``[{id, category_id, iscrowd, bbox, area}]``) and ``categories`` (``{id, name, isthing}``),
an image folder and a folder of RGB PNGs whose colour encodes the segment id (``R + 256 G + 256² B``, 0 = VOID;
panopticapi's ``utils.rgb2id``, https://github.com/cocodataset/panopticapi/blob/master/panopticapi/utils.py).

Each item is ``(image, target)`` as :class:`splitattn.detection.data.CocoDetection` returns it (float CHW image
in [0, 1]; ``boxes`` XYXY, ``labels`` 1..C, ``masks`` G×H×W uint8, ``image_id``, ``area``, ``iscrowd``) plus
``sem_seg`` (H×W int64), the labels detectron2's Panoptic FPN trains its semantic head on, built as
``separate_coco_semantic_from_panoptic`` builds them
(https://github.com/facebookresearch/detectron2/blob/main/datasets/prepare_panoptic_fpn.py): every listed
segment of a thing category → 0 (crowd ones too: that script ignores ``iscrowd``), stuff categories → 1..S
contiguous in category-id order, everything else (VOID, ids the json does not list) → 255.

Category tables come from the json, never from a hard-coded list: things and stuff each in category-id order,
as ``_get_coco_instances_meta`` / ``_get_coco_panoptic_separated_meta`` order COCO's
(https://github.com/facebookresearch/detectron2/blob/main/detectron2/data/datasets/builtin_meta.py).

One deliberate difference from detectron2's "separated" COCO setting
(``register_coco_panoptic_separated`` in
https://github.com/facebookresearch/detectron2/blob/main/detectron2/data/datasets/coco_panoptic.py): instance
targets come from the panoptic PNG itself (non-overlapping masks, tight boxes of the mask), not from the separate
``instances_{split}2017.json`` polygons, so one json + one PNG folder are enough.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from ..data.images import DatasetError, image_size, open_image
from .data import mask_extents, problem_report
from .panoptic_format import MAX_SEGMENT_ID, read_panoptic_png, separated_category_mapping

__all__ = ["IGNORE_LABEL", "CocoPanoptic"]

IGNORE_LABEL = 255  # detectron2's SEM_SEG_HEAD.IGNORE_VALUE and prepare_panoptic_fpn.py's unlabelled value
_MAX_STUFF = 254  # stuff classes 1..254 fit between "things" (0) and the ignore label (as the script asserts)
_MAX_EXAMPLES = 5
# kind: (what is wrong with one item and how to fix it: the strict error; the report line for a count of them)
_PROBLEMS = {
    "unknown_image": ("its image_id is not in 'images'; add the image or remove the annotation",
                      "annotations whose image_id is not in 'images' (dropped)"),
    "duplicate_annotation": ("the image already has an annotation; keep one per image",
                             "further annotations of an image that already has one (dropped; the first is kept)"),
    "unannotated_image": ("it has no annotation; add one (with an empty segments_info if it is all VOID) or remove "
                          "the image", "images without an annotation (left out: panopticapi scores annotated images "
                          "only)"),
    "malformed_segment": ("a segment needs an integer id in [1, 256**3), unique in its image, and an integer "
                          "category_id", "malformed or repeated segments (dropped: their pixels are ignored, 255)"),
    "unknown_category": ("the category_id is not in 'categories'; add the category or fix the segment",
                         "segments whose category_id is not in 'categories' (dropped: their pixels are ignored, 255)"),
    "crowd": ("", "crowd thing segments, iscrowd=1 (left out of the instance targets; 'things' (0) in sem_seg, as "
                  "detectron2's prepare_panoptic_fpn.py labels them; PQ ignores them)"),
    "unlisted_segment": ("the PNG holds these segment ids but segments_info does not list them; list them or paint "
                         "those pixels 0 (VOID)", "images whose PNG holds segment ids its segments_info does not list "
                         "(those pixels ignored, 255, as prepare_panoptic_fpn.py leaves them)"),
    "empty_segment": ("the segment has no pixel in the PNG; remove it from segments_info or paint it",
                      "listed segments without a pixel in the PNG (dropped)"),
}
_LENIENT = ("crowd",)  # problems that strict=True counts instead of raising


class CocoPanoptic(Dataset):
    """COCO panoptic segmentation for Panoptic FPN training and evaluation.

    Args:
        image_dir: folder of the images named by ``images[].file_name``.
        ann_file: the panoptic json (``panoptic_val2017.json``).
        panoptic_dir: folder of the panoptic PNGs named by ``annotations[].file_name``; None = ``ann_file``
            without ``.json`` (panopticapi's convention, as :func:`~.panoptic_quality.pq_compute` assumes).
        train: add a random horizontal flip (``flip_prob``) of the image, boxes, masks and ``sem_seg`` together.
        strict: raise a :class:`DatasetError` for the first problem instead of dropping and counting it
            (crowd segments are always just counted).
        check_pngs: decode every PNG now, so that :attr:`problems` also holds the PNG-level problems
            (``unlisted_segment``, ``empty_segment``) before training starts; otherwise each PNG is checked when
            its item is first read.

    Missing image or PNG files, a PNG of another size than its image and malformed json are always a one-line
    :class:`DatasetError` (a ValueError) naming the file and the fix.

    Attributes: ``thing_classes`` (C names; label ``l`` is ``thing_classes[l - 1]``; also ``class_names``),
    ``stuff_classes`` (``["things", *stuff names]``: semantic class ``k`` is ``stuff_classes[k]``, as
    detectron2's separated metadata), ``num_classes`` (C + 1: the R-CNN's ``num_classes``),
    ``num_stuff_classes`` (S + 1: the semantic head's ``sem_seg_classes``), ``thing_dataset_ids`` /
    ``stuff_dataset_ids``, ``cat_id_to_label`` / ``label_to_cat_id`` (things), ``stuff_id_to_semantic``,
    ``contiguous_to_category_id`` (the ``(isthing, contiguous id) → category id`` table that
    :func:`~.panoptic_format.to_coco_panoptic` takes), ``categories`` (the json's, by id), ``image_ids``,
    ``problems`` / :meth:`problem_report`.
    """

    def __init__(self, image_dir: str | Path, ann_file: str | Path, panoptic_dir: str | Path | None = None,
                 train: bool = False, flip_prob: float = 0.5, strict: bool = False, check_pngs: bool = False):
        self.image_dir, self.ann_file = Path(image_dir), Path(ann_file)
        self.panoptic_dir = Path(panoptic_dir) if panoptic_dir is not None else self.ann_file.with_suffix("")
        self.train, self.flip_prob, self.strict = train, float(flip_prob), strict
        self.problems: Counter = Counter()
        self.problem_examples: dict[str, list[str]] = {}
        coco = self._load_json()
        self._build_category_tables(coco["categories"])
        self._images = self._read_images(coco["images"])
        self._annotations: dict[int, dict] = {}  # image id → the checked annotation record
        self._segments: dict[int, list[tuple[int, int, bool]]] = {}  # image id → (segment id, category id, crowd)
        self._dropped: dict[int, set[int]] = {}  # image id → listed segment ids that were dropped
        for ann in coco["annotations"]:
            self._read_annotation(ann)
        for image_id in sorted(set(self._images) - set(self._annotations)):
            self._problem("unannotated_image", f"image id {image_id} ({self._images[image_id]['file_name']})")
        self.image_ids = sorted(self._annotations)
        self._check_files()
        self._png_checked: set[int] = set()
        self._transform = self._build_transform() if train else None
        if check_pngs:
            self.check_pngs()

    # ------------------------------------------------------------------------------------ reading the json
    def _load_json(self) -> dict:
        if not self.ann_file.is_file():
            raise DatasetError(f"COCO panoptic json {self.ann_file} does not exist; check the path")
        try:
            with open(self.ann_file, encoding="utf-8") as handle:
                coco = json.load(handle)
        except json.JSONDecodeError as err:
            raise DatasetError(f"{self.ann_file} is not valid JSON ({err})") from None
        missing = [k for k in ("images", "annotations", "categories")
                   if not isinstance(coco, dict) or not isinstance(coco.get(k), list)]
        if missing:
            raise DatasetError(f"{self.ann_file} is not a COCO panoptic json: it lacks the list(s) {missing} "
                               "(expected 'images', 'annotations' with 'segments_info', 'categories' with 'isthing')")
        return coco

    def _build_category_tables(self, categories: list) -> None:
        for cat in categories:
            if not isinstance(cat, dict) or "id" not in cat:
                raise DatasetError(f"{self.ann_file}: a category lacks an 'id': {str(cat)[:200]}")
            if cat.get("isthing") not in (0, 1):  # True / False compare equal to 1 / 0
                if "isthing" not in cat and "panoptic" not in self.ann_file.name:
                    raise DatasetError(f"{self.ann_file}: its categories have no 'isthing': this looks like a COCO "
                                       "instances json; point the annotations at a panoptic json "
                                       "(panoptic_train2017.json / panoptic_val2017.json)")
                raise DatasetError(f"{self.ann_file}: category {cat['id']} ({cat.get('name')}) has isthing="
                                   f"{cat.get('isthing')!r}; COCO panoptic categories mark things 1 and stuff 0")
        ids = [int(c["id"]) for c in categories]
        if len(set(ids)) != len(ids):
            dupes = sorted(i for i in set(ids) if ids.count(i) > 1)
            raise DatasetError(f"{self.ann_file}: duplicate category ids {dupes}; give every category its own id")
        self.categories = sorted((dict(c) for c in categories), key=lambda c: int(c["id"]))
        things = [c for c in self.categories if c["isthing"]]
        stuff = [c for c in self.categories if not c["isthing"]]
        if not things:
            raise DatasetError(f"{self.ann_file} has no thing category (isthing=1); Panoptic FPN needs at least one")
        if len(stuff) > _MAX_STUFF:
            raise DatasetError(f"{self.ann_file} has {len(stuff)} stuff categories; the semantic labels hold at most "
                               f"{_MAX_STUFF} (0 = things, 255 = ignore)")
        self.thing_dataset_ids = [int(c["id"]) for c in things]
        self.stuff_dataset_ids = [int(c["id"]) for c in stuff]
        self.thing_classes = [str(c.get("name", c["id"])) for c in things]
        self.stuff_classes = ["things"] + [str(c.get("name", c["id"])) for c in stuff]
        self.class_names = self.thing_classes  # CocoDetection's name for them
        self.num_classes = len(things) + 1
        self.num_stuff_classes = len(stuff) + 1
        self.cat_id_to_label = {cat_id: i + 1 for i, cat_id in enumerate(self.thing_dataset_ids)}
        self.label_to_cat_id = {label: cat_id for cat_id, label in self.cat_id_to_label.items()}
        self.stuff_id_to_semantic = {cat_id: i + 1 for i, cat_id in enumerate(self.stuff_dataset_ids)}
        self.contiguous_to_category_id = separated_category_mapping(self.thing_dataset_ids, self.stuff_dataset_ids)

    def _read_images(self, images: list) -> dict[int, dict]:
        out: dict[int, dict] = {}
        for info in images:
            if not isinstance(info, dict) or "id" not in info or "file_name" not in info:
                raise DatasetError(f"{self.ann_file}: an entry of 'images' lacks 'id' or 'file_name': "
                                   f"{str(info)[:200]}")
            image_id = int(info["id"])
            if image_id in out:
                raise DatasetError(f"{self.ann_file}: image id {image_id} appears twice in 'images'")
            out[image_id] = dict(info)
        return out

    def _read_annotation(self, ann: dict) -> None:
        if not isinstance(ann, dict) or "image_id" not in ann or "file_name" not in ann \
                or not isinstance(ann.get("segments_info"), list):
            raise DatasetError(f"{self.ann_file}: an annotation lacks 'image_id', 'file_name' or a 'segments_info' "
                               f"list: {str(ann)[:200]}")
        image_id = int(ann["image_id"])
        where = f"annotation {ann['file_name']} (image id {image_id})"
        if image_id not in self._images:
            return self._problem("unknown_image", where)
        if image_id in self._annotations:
            return self._problem("duplicate_annotation", where)
        kept, table, dropped = [], [], set()
        for seg in ann["segments_info"]:
            seg_id, cat_id = (seg.get("id"), seg.get("category_id")) if isinstance(seg, dict) else (None, None)
            if not isinstance(seg_id, int) or not 0 < seg_id <= MAX_SEGMENT_ID or not isinstance(cat_id, int) \
                    or seg_id in dropped or any(seg_id == s for s, _, _ in table):
                self._problem("malformed_segment", f"{where}, segment {str(seg)[:120]}")
                if isinstance(seg_id, int):
                    dropped.add(seg_id)
                continue
            if int(cat_id) not in self.cat_id_to_label and int(cat_id) not in self.stuff_id_to_semantic:
                self._problem("unknown_category", f"{where}, segment id {seg_id}: category_id {cat_id}")
                dropped.add(seg_id)
                continue
            crowd = bool(int(seg.get("iscrowd", 0))) and int(cat_id) in self.cat_id_to_label
            if crowd:
                self._problem("crowd", f"{where}, segment id {seg_id}")
            kept.append(dict(seg))
            table.append((seg_id, int(cat_id), crowd))
        self._annotations[image_id] = {**ann, "image_id": image_id, "segments_info": kept}
        self._segments[image_id] = table
        self._dropped[image_id] = dropped - {s for s, _, _ in table}

    def _check_files(self) -> None:
        missing_images, missing_pngs = [], []
        for image_id in self.image_ids:
            info = self._images[image_id]
            path = self.image_dir / info["file_name"]
            if not path.is_file():
                missing_images.append(path)
            elif "height" not in info or "width" not in info:
                info["width"], info["height"] = image_size(path)
            if not self.png_path(image_id).is_file():
                missing_pngs.append(self.png_path(image_id))
        for missing, what, fix in ((missing_images, "image file(s)", f"image_dir={self.image_dir}"),
                                   (missing_pngs, "panoptic PNG(s)", f"the PNG folder {self.panoptic_dir}: "
                                    "panoptic_dir=, --panoptic-dir or data.*_panoptic_dir")):
            if missing:
                raise DatasetError(f"{len(missing)} {what} named in {self.ann_file} are missing, e.g. "
                                   f"{', '.join(str(p) for p in missing[:3])} (check {fix})")

    def _problem(self, kind: str, where: str) -> None:
        if self.strict and kind not in _LENIENT:
            raise DatasetError(f"{self.ann_file}: {where}: {_PROBLEMS[kind][0]} (strict=False would count it and go "
                               "on)")
        self.problems[kind] += 1
        examples = self.problem_examples.setdefault(kind, [])
        if len(examples) < _MAX_EXAMPLES:
            examples.append(where)

    # ------------------------------------------------------------------------------------ reporting
    def problem_report(self) -> str:
        """A readable summary of what was dropped / altered while reading the json (and the PNGs checked so far)."""
        segments = sum(len(t) for t in self._segments.values())
        return problem_report(f"{self.ann_file}: {len(self.image_ids)} images, {segments} segments kept, "
                              f"{len(self.thing_classes)} thing and {len(self.stuff_classes) - 1} stuff classes",
                              self.problems, self.problem_examples, {k: v[1] for k, v in _PROBLEMS.items()})

    def panoptic_ground_truth(self) -> dict:
        """The checked json (kept images and segments, categories): what PQ is scored against, with the PNGs of
        :attr:`panoptic_dir`. A PNG ``file_name`` with a folder part is written as its full path, as panopticapi
        reads such names."""
        annotations = []
        for image_id in self.image_ids:
            ann = dict(self._annotations[image_id])
            if Path(ann["file_name"]).parent != Path():
                ann["file_name"] = str(self.png_path(image_id).resolve())
            annotations.append(ann)
        return {"images": [dict(self._images[i]) for i in self.image_ids], "annotations": annotations,
                "categories": [dict(c) for c in self.categories]}

    # ------------------------------------------------------------------------------------ items
    def __len__(self) -> int:
        return len(self.image_ids)

    def image_info(self, index: int) -> dict:
        return self._images[self.image_ids[index]]

    def annotation(self, index: int) -> dict:
        """The checked annotation record (``image_id``, ``file_name``, kept ``segments_info``) of item ``index``."""
        return self._annotations[self.image_ids[index]]

    def png_path(self, image_id: int) -> Path:
        return self.panoptic_dir / self._annotations[image_id]["file_name"]

    def load_image(self, index: int) -> Image.Image:
        info = self.image_info(index)
        path = self.image_dir / info["file_name"]
        image = open_image(path)
        if image.size != (int(info["width"]), int(info["height"])):
            raise DatasetError(f"image {path} is {image.size[0]}x{image.size[1]} but {self.ann_file} says "
                               f"{info['width']}x{info['height']}")
        return image

    def check_pngs(self) -> CocoPanoptic:
        """Decode every PNG once, filling :attr:`problems` (or raising, with ``strict``)."""
        for index in range(len(self)):
            self._decode(index)
        return self

    def _decode(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(sem_seg H×W int64, thing masks G×H×W bool, labels G) of item ``index``, from its PNG."""
        image_id = self.image_ids[index]
        info, png = self._images[image_id], self.png_path(image_id)
        ids = read_panoptic_png(png)
        if ids.shape != (int(info["height"]), int(info["width"])):
            raise DatasetError(f"panoptic PNG {png} is {ids.shape[1]}x{ids.shape[0]} but its image "
                               f"{info['file_name']} is {info['width']}x{info['height']}; the PNG must match its image")
        present, inverse = np.unique(ids, return_inverse=True)
        inverse = inverse.reshape(ids.shape)
        slot = {int(seg_id): i for i, seg_id in enumerate(present.tolist())}
        first_look = image_id not in self._png_checked  # count each image's problems once (strict: raise each time)
        table = self._segments[image_id]
        unlisted = sorted(set(slot) - {0} - {s for s, _, _ in table} - self._dropped[image_id])
        if unlisted and first_look:
            self._problem("unlisted_segment", f"PNG {png}: segment ids {unlisted[:5]}")
        lut = np.full(len(present), IGNORE_LABEL, dtype=np.int64)
        masks, labels = [], []
        for seg_id, cat_id, crowd in table:
            if seg_id not in slot:
                if first_look:
                    self._problem("empty_segment", f"PNG {png}: segment id {seg_id} (category {cat_id})")
                continue
            lut[slot[seg_id]] = self.stuff_id_to_semantic.get(cat_id, 0)
            if cat_id in self.cat_id_to_label and not crowd:
                masks.append(inverse == slot[seg_id])
                labels.append(self.cat_id_to_label[cat_id])
        self._png_checked.add(image_id)
        masks_array = np.stack(masks) if masks else np.zeros((0, *ids.shape), dtype=bool)
        return lut[inverse], masks_array, np.array(labels, dtype=np.int64)

    def _build_transform(self):
        from torchvision.transforms import v2

        return v2.RandomHorizontalFlip(self.flip_prob)

    def __getitem__(self, index: int):
        from torchvision import tv_tensors

        pil = self.load_image(index)
        width, height = pil.size
        image = tv_tensors.Image(torch.from_numpy(np.asarray(pil).copy()).permute(2, 0, 1).float().div_(255))
        sem_seg, masks, labels = self._decode(index)
        boxes = [(x, y, x + w, y + h) for x, y, w, h in (mask_extents(m) for m in masks)]
        target = {
            "boxes": tv_tensors.BoundingBoxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), format="XYXY",
                                              canvas_size=(height, width)),
            "labels": torch.from_numpy(labels),
            "masks": tv_tensors.Mask(torch.from_numpy(masks.astype(np.uint8))),
            "sem_seg": tv_tensors.Mask(torch.from_numpy(sem_seg)),
            "image_id": int(self.image_ids[index]),
            "area": torch.from_numpy(masks.sum(axis=(1, 2)).astype(np.float32)),
            "iscrowd": torch.zeros(len(labels), dtype=torch.int64),
        }
        if self._transform is not None:
            image, target = self._transform(image, target)
        return image, target

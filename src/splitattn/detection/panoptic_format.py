"""COCO panoptic files: the RGB-encoded segment-id PNGs and the predictions json.

The format is the one described at https://cocodataset.org/#format-data and read by panopticapi
(https://github.com/cocodataset/panopticapi): every image is a PNG whose pixel colour encodes a segment id,
``id = R + 256 * G + 256 * 256 * B`` (0 = VOID), and a json record lists the segments of that image with their
category ids.

Model output arrives in detectron2's PanopticFPN form (``combine_semantic_and_instance_outputs`` in
https://github.com/facebookresearch/detectron2/blob/main/detectron2/modeling/meta_arch/panoptic_fpn.py): an
HxW id map and ``segments_info`` whose ``category_id`` is a *contiguous* index, split by ``isthing``.
:func:`to_coco_panoptic` maps it back to dataset category ids through an explicit table, as detectron2's
``COCOPanopticEvaluator._convert_category_id`` does
(https://github.com/facebookresearch/detectron2/blob/main/detectron2/evaluation/panoptic_evaluation.py).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

MAX_SEGMENT_ID = 256**3 - 1  # three 8-bit channels

CategoryMapping = Mapping[tuple[bool, int], int] | Callable[[bool, int], int]


def rgb_to_id(rgb: np.ndarray) -> np.ndarray:
    """HxWx3 colours → HxW int64 segment ids, ``R + 256 G + 256² B`` (panopticapi's ``utils.rgb2id``)."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[-1] != 3:
        raise ValueError(f"rgb_to_id expects an HxWx3 array, got shape {rgb.shape}")
    rgb = rgb.astype(np.int64)  # uint8 arithmetic would overflow
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


def id_to_rgb(ids: np.ndarray | torch.Tensor) -> np.ndarray:
    """HxW segment ids → HxWx3 uint8 colours (panopticapi's ``utils.id2rgb``).

    Unlike panopticapi, an id outside ``[0, 256**3)`` is an error rather than silently wrapped.
    """
    ids = _as_numpy_ids(ids)
    if ids.size and (ids.min() < 0 or ids.max() > MAX_SEGMENT_ID):
        raise ValueError(f"segment ids must lie in [0, {MAX_SEGMENT_ID}] to fit an RGB PNG, "
                         f"got [{ids.min()}, {ids.max()}]")
    rgb = np.empty((*ids.shape, 3), dtype=np.uint8)
    remaining = ids.copy()
    for channel in range(3):
        rgb[..., channel] = remaining % 256
        remaining //= 256
    return rgb


def write_panoptic_png(path: str | os.PathLike, segment_ids: np.ndarray | torch.Tensor) -> None:
    """Save an HxW id map as a COCO panoptic PNG; a temp file beside ``path`` is renamed into place."""
    rgb = id_to_rgb(segment_ids)
    _atomic_write(Path(path), lambda handle: Image.fromarray(rgb).save(handle, format="PNG"))


def read_panoptic_png(path: str | os.PathLike) -> np.ndarray:
    """A COCO panoptic PNG → HxW int64 segment ids."""
    with Image.open(path) as image:
        if image.mode != "RGB":
            raise ValueError(f"{path} is a {image.mode} PNG; COCO panoptic PNGs are RGB (write them with "
                             "write_panoptic_png)")
        return rgb_to_id(np.asarray(image))


def write_predictions_json(path: str | os.PathLike, annotations: Sequence[dict], categories: Sequence[dict]) -> None:
    """Write ``{"annotations": [...], "categories": [...]}``, the json that :func:`pq_compute` and panopticapi read."""
    payload = {"annotations": list(annotations), "categories": list(categories)}
    text = json.dumps(payload, default=_json_number)
    _atomic_write(Path(path), lambda handle: handle.write(text.encode("utf-8")))


def separated_category_mapping(thing_dataset_ids: Sequence[int],
                               stuff_dataset_ids: Sequence[int]) -> dict[tuple[bool, int], int]:
    """The ``(isthing, contiguous id) → dataset category id`` table of detectron2's "separated" COCO setting.

    Thing ``i`` (0-based, dataset order) is ``thing_dataset_ids[i]``; stuff contiguous ids start at 1 because
    the semantic head's class 0 is the merged "things" class, which never becomes a segment
    (``_get_coco_panoptic_separated_meta`` in
    https://github.com/facebookresearch/detectron2/blob/main/detectron2/data/datasets/builtin_meta.py).
    """
    table = {(True, i): int(cat) for i, cat in enumerate(thing_dataset_ids)}
    table.update({(False, i + 1): int(cat) for i, cat in enumerate(stuff_dataset_ids)})
    return table


def to_coco_panoptic(panoptic_seg: torch.Tensor | np.ndarray, segments_info: Sequence[dict], image_id: int,
                     file_name: str, contiguous_to_category_id: CategoryMapping) -> tuple[dict, np.ndarray]:
    """One image's PanopticFPN output → (COCO panoptic annotation record, HxW int64 id map for its PNG).

    ``panoptic_seg`` holds segment ids (0 = VOID); each ``segments_info`` entry has ``id``, ``category_id``
    and ``isthing``. ``contiguous_to_category_id`` maps ``(isthing, category_id)`` to the dataset category id,
    as a mapping (e.g. :func:`separated_category_mapping`) or a callable; an entry without ``isthing``
    already carries a dataset id and is kept as is (as detectron2's evaluator does). ``file_name`` is the
    PNG's name inside the predictions folder (detectron2 uses the image's base name with ``.png``).

    Each output segment gets ``iscrowd`` 0, its pixel ``area`` and its pixel ``bbox`` ``[x, y, w, h]``
    (w = last column - first column + 1, as panopticapi's converters compute it). A listed segment with no
    pixel left is dropped, because panopticapi rejects json segments absent from the PNG.
    """
    ids = _as_numpy_ids(panoptic_seg)
    present, counts = np.unique(ids, return_counts=True)
    area_of = dict(zip(present.tolist(), counts.tolist()))
    listed = [int(seg["id"]) for seg in segments_info]
    unlisted = sorted(set(area_of) - set(listed) - {0})
    if unlisted:
        raise ValueError(f"image {image_id}: panoptic_seg holds segment ids {unlisted[:10]} that segments_info "
                         "does not list; list them or set those pixels to 0 (VOID)")
    if 0 in listed:
        raise ValueError(f"image {image_id}: segments_info lists id 0, which is VOID in COCO panoptic; "
                         "number segments from 1")
    segments = []
    for seg, seg_id in zip(segments_info, listed):
        if seg_id not in area_of:
            continue
        segments.append({"id": seg_id, "category_id": _dataset_category_id(seg, contiguous_to_category_id, image_id),
                         "iscrowd": 0, "area": int(area_of[seg_id]), "bbox": _bbox_xywh(ids == seg_id)})
    record = {"image_id": image_id, "file_name": file_name, "segments_info": segments}
    return record, ids


def _dataset_category_id(seg: dict, mapping: CategoryMapping, image_id: int) -> int:
    if "isthing" not in seg:
        return int(seg["category_id"])
    key = (bool(seg["isthing"]), int(seg["category_id"]))
    try:
        return int(mapping(*key) if callable(mapping) else mapping[key])
    except KeyError:
        raise ValueError(f"image {image_id}: no dataset category for (isthing={key[0]}, contiguous id {key[1]}); "
                         "add it to contiguous_to_category_id (in detectron2's separated setting stuff ids start "
                         "at 1, 0 being the merged 'things' class)") from None


def _bbox_xywh(mask: np.ndarray) -> list[int]:
    cols = np.flatnonzero(mask.any(axis=0))
    rows = np.flatnonzero(mask.any(axis=1))
    return [int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)]


def _as_numpy_ids(ids: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(ids, torch.Tensor):
        ids = ids.detach().cpu().numpy()
    ids = np.asarray(ids)
    if ids.ndim != 2:
        raise ValueError(f"expected an HxW id map, got shape {ids.shape}")
    if not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"segment ids must be integers, got dtype {ids.dtype}")
    return ids.astype(np.int64)


def _json_number(value):
    # numpy scalars slip into records built from np.unique counts; json cannot encode them
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _atomic_write(path: Path, write: Callable) -> None:
    """Write through a temp file in the same folder, then rename: a crash never leaves a truncated file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as handle:
            write(handle)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)

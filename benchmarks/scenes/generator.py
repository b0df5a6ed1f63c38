"""Composite detection / segmentation scenes built from real Fashion-MNIST objects.

No registry ships a multi-image real detection or segmentation set that installs offline, so this
module pastes real Fashion-MNIST garments onto canvases (see ``shared/spec/offline-data.md``):

- train scenes take their objects from the Fashion-MNIST *train* split, val scenes from the *test*
  split, so no object is shared between them;
- each object is a real 28×28 image resized (bilinear) to a random square size in ``object_size``; its
  mask is ``resized pixel > 40``; it is tinted with a random saturated colour and alpha-blended
  (alpha = pixel / 255) onto the canvas inside its mask, at a random position fully inside the canvas;
- the background is a smooth, low-contrast random colour gradient plus mild Gaussian noise;
- later objects occlude earlier ones. **Placement rule**: a position is accepted only if every instance
  already placed keeps at least ``max(min_visible × its own mask area, 20)`` visible pixels; a new
  object's own mask needs at least 20 pixels. Up to ``_ATTEMPTS`` positions (and a fresh object every
  few tries) are drawn; an object that cannot be placed is skipped (and counted). No annotated instance
  is ever removed afterwards, so the semantic map is exactly the union of the visible instance masks.

Layout written under ``out_dir``::

    scenes.json                        parameters + counts (a rerun with the same parameters reuses the set)
    {train,val}/images/{id:06d}.png    RGB
    {train,val}/semantic/{id:06d}.png  mode "L": 0 background, Fashion-MNIST class index + 1 where visible
    {train,val}/annotations.json       COCO: tight boxes / areas of the *visible* masks, compressed RLE

Each annotation also records where its object came from (``"source": {"split", "index", "size", "x", "y"}``,
the Fashion-MNIST split and index and the placement), and each image entry its ``"source_split"``.
Every scene is drawn from its own ``numpy`` Generator seeded by ``(seed, split, image index)``:
the same seed gives byte-identical files, and scene ``i`` does not depend on ``num_train``/``num_val``.
"""

from __future__ import annotations

import colorsys
import json
import shutil
from collections import Counter
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from splitattn.classification.fashion_mnist import CLASSES, load_fashion_mnist
from splitattn.detection.data import instance_annotation

__all__ = ["make_scenes", "preview_scenes", "render_scene", "scenes_classes"]

GENERATOR_VERSION = 1
MASK_THRESHOLD = 40
MIN_PIXELS = 20
_ATTEMPTS = 60  # positions tried per object (a fresh object is drawn every _RESAMPLE tries)
_RESAMPLE = 15
_SPLITS = {"train": ("train", 0), "val": ("test", 1)}  # scene split -> (Fashion-MNIST split, seed tag)


def scenes_classes() -> list[str]:
    """Category names, category id ``k`` (and semantic value ``k``) is ``scenes_classes()[k - 1]``."""
    return list(CLASSES)


@lru_cache(maxsize=4)
def _fashion_split(root: str | None, split: str) -> tuple[np.ndarray, np.ndarray]:
    x, y = load_fashion_mnist(root, split)
    return x.numpy(), y.numpy()


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Smooth, low-contrast colour gradient plus mild noise, float32 (H, W, 3) in 0..255."""
    base = rng.uniform(25, 140, size=3)
    other = np.clip(base + rng.uniform(-45, 45, size=3), 0, 255)
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / max(size - 1, 1)
    t = np.cos(angle) * xx + np.sin(angle) * yy
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    image = base[None, None, :] * (1 - t[..., None]) + other[None, None, :] * t[..., None]
    image = image + rng.normal(0, 4.0, size=(size, size, 3))
    return image.astype(np.float32)


def _tint(rng: np.random.Generator) -> np.ndarray:
    h, s, v = rng.uniform(0, 1), rng.uniform(0.45, 1.0), rng.uniform(0.75, 1.0)
    return np.array(colorsys.hsv_to_rgb(h, s, v), dtype=np.float32) * 255


def render_scene(rng: np.random.Generator, pool: np.ndarray, pool_labels: np.ndarray, size: int = 128,
                 objects: tuple[int, int] = (1, 4), object_size: tuple[int, int] = (24, 56),
                 min_visible: float = 0.3) -> tuple[np.ndarray, list[dict], int]:
    """One scene: ``(rgb uint8 (H, W, 3), instances, skipped)``.

    ``instances`` are dicts with ``mask`` (visible, bool), ``label`` (0-based class), ``index`` (into
    ``pool``), ``size``, ``x``, ``y``; ``skipped`` counts objects that found no valid position.
    """
    lo, hi = int(object_size[0]), int(object_size[1])
    if not 1 <= lo <= hi <= size:
        raise ValueError(f"object_size {object_size} must satisfy 1 <= min <= max <= size ({size})")
    canvas = _background(rng, size)
    count = int(rng.integers(objects[0], objects[1] + 1))
    placed: list[dict] = []
    skipped = 0
    for _ in range(count):
        accepted = patch_mask = None
        for attempt in range(_ATTEMPTS):
            if patch_mask is None or attempt % _RESAMPLE == 0:
                index = int(rng.integers(len(pool)))
                side = int(rng.integers(lo, hi + 1))
                patch = np.asarray(Image.fromarray(pool[index]).resize((side, side), Image.BILINEAR), np.float32)
                patch_mask = patch > MASK_THRESHOLD
                if patch_mask.sum() < MIN_PIXELS:
                    patch_mask = None
                    continue
            y0, x0 = int(rng.integers(0, size - side + 1)), int(rng.integers(0, size - side + 1))
            full = np.zeros((size, size), bool)
            full[y0:y0 + side, x0:x0 + side] = patch_mask
            if all((inst["mask"] & ~full).sum() >= max(min_visible * inst["own"], MIN_PIXELS) for inst in placed):
                accepted = (index, side, patch, full, y0, x0)
                break
        if accepted is None:
            skipped += 1
            continue
        index, side, patch, full, y0, x0 = accepted
        tint = _tint(rng)
        alpha = (patch / 255.0)[..., None] * (patch > MASK_THRESHOLD)[..., None]
        region = canvas[y0:y0 + side, x0:x0 + side]
        canvas[y0:y0 + side, x0:x0 + side] = region * (1 - alpha) + tint[None, None, :] * alpha
        for inst in placed:
            inst["mask"] &= ~full
        placed.append({"mask": full, "own": int(full.sum()), "label": int(pool_labels[index]), "index": index,
                       "size": side, "x": x0, "y": y0})
    rgb = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
    return rgb, placed, skipped


def _params(num_train, num_val, size, objects, object_size, seed, min_visible) -> dict:
    return {"generator_version": GENERATOR_VERSION, "num_train": int(num_train), "num_val": int(num_val),
            "size": int(size), "objects": [int(v) for v in objects], "object_size": [int(v) for v in object_size],
            "seed": int(seed), "min_visible": float(min_visible), "mask_threshold": MASK_THRESHOLD,
            "min_pixels": MIN_PIXELS, "object_source": {"train": "fashion-mnist train", "val": "fashion-mnist test"}}


def _complete(out_dir: Path, summary: dict) -> bool:
    for split, info in summary.get("splits", {}).items():
        root = out_dir / split
        if not (root / "annotations.json").is_file():
            return False
        for folder in ("images", "semantic"):
            if len(list((root / folder).glob("*.png"))) != info["images"]:
                return False
    return True


def make_scenes(out_dir: str | Path, num_train: int = 2000, num_val: int = 500, size: int = 128,
                objects: tuple[int, int] = (1, 4), object_size: tuple[int, int] = (24, 56), seed: int = 0,
                fashion_root: str | Path | None = None, min_visible: float = 0.3, progress: bool = True) -> dict:
    """Write (or reuse) a composite scene set under ``out_dir`` and return its summary.

    If ``out_dir/scenes.json`` records the same parameters and every file is there, nothing is
    regenerated (``summary["reused"]`` is True); otherwise the splits are (re)written and
    ``scenes.json`` is written last, so an interrupted run is never mistaken for a complete one.

    The summary: ``params``, ``classes``, ``out_dir``, ``reused`` and ``splits[split]`` with ``images``,
    ``instances``, ``skipped_objects``, ``per_class`` (name -> instance count), ``object_source``
    (the Fashion-MNIST split) and absolute ``image_dir`` / ``semantic_dir`` / ``ann_file``.
    """
    if not 0 <= objects[0] <= objects[1]:
        raise ValueError(f"objects must be (min, max) with 0 <= min <= max, got {objects}")
    if not 0.0 <= min_visible <= 1.0:
        raise ValueError(f"min_visible must be in [0, 1], got {min_visible}")
    out_dir = Path(out_dir)
    params = _params(num_train, num_val, size, objects, object_size, seed, min_visible)
    meta_path = out_dir / "scenes.json"
    if meta_path.is_file():
        try:
            previous = json.loads(meta_path.read_text())
        except (OSError, json.JSONDecodeError):
            previous = {}
        if previous.get("params") == params and _complete(out_dir, previous):
            return _absolute(previous, out_dir, reused=True)
        for split in _SPLITS:  # a set of ours with other parameters: clear it so no stale file survives
            for folder in ("images", "semantic"):
                shutil.rmtree(out_dir / split / folder, ignore_errors=True)
        meta_path.unlink()

    root = None if fashion_root is None else str(fashion_root)
    names = scenes_classes()
    categories = [{"id": i + 1, "name": name, "supercategory": "fashion"} for i, name in enumerate(names)]
    summary = {"params": params, "classes": names, "splits": {}}
    for split, number in (("train", num_train), ("val", num_val)):
        source_split, tag = _SPLITS[split]
        pool, pool_labels = _fashion_split(root, source_split)
        split_dir = out_dir / split
        (split_dir / "images").mkdir(parents=True, exist_ok=True)
        (split_dir / "semantic").mkdir(parents=True, exist_ok=True)
        images, annotations = [], []
        per_class: Counter = Counter()
        skipped = 0
        iterator = range(number)
        if progress:
            from tqdm import tqdm

            iterator = tqdm(iterator, desc=f"scenes {split}", unit="img", leave=False)
        for index in iterator:
            rng = np.random.default_rng([int(seed), tag, index])
            rgb, instances, missed = render_scene(rng, pool, pool_labels, size, objects, object_size, min_visible)
            skipped += missed
            image_id = index + 1
            file_name = f"{index:06d}.png"
            semantic = np.zeros((size, size), np.uint8)
            for inst in instances:
                semantic[inst["mask"]] = inst["label"] + 1
                ann = instance_annotation(inst["mask"], inst["label"] + 1, len(annotations) + 1, image_id)
                ann["source"] = {"split": source_split, "index": inst["index"], "size": inst["size"],
                                 "x": inst["x"], "y": inst["y"]}
                annotations.append(ann)
                per_class[names[inst["label"]]] += 1
            Image.fromarray(rgb, "RGB").save(split_dir / "images" / file_name)
            Image.fromarray(semantic, "L").save(split_dir / "semantic" / file_name)
            images.append({"id": image_id, "file_name": file_name, "width": size, "height": size,
                           "source_split": source_split})
        coco = {"info": {"description": f"splitattn Fashion-MNIST scenes ({split}, objects from the "
                                        f"Fashion-MNIST {source_split} split)", "version": str(GENERATOR_VERSION)},
                "images": images, "annotations": annotations, "categories": categories}
        with open(split_dir / "annotations.json", "w", encoding="utf-8") as handle:
            json.dump(coco, handle, separators=(",", ":"))
        summary["splits"][split] = {
            "images": len(images), "instances": len(annotations), "skipped_objects": skipped,
            "per_class": {name: per_class.get(name, 0) for name in names}, "object_source": source_split,
            "image_dir": f"{split}/images", "semantic_dir": f"{split}/semantic",
            "ann_file": f"{split}/annotations.json",
        }
    meta_path.write_text(json.dumps(summary, indent=2) + "\n")  # relative paths: a moved set still matches
    return _absolute(summary, out_dir, reused=False)


def _absolute(summary: dict, out_dir: Path, reused: bool) -> dict:
    splits = {split: {**info, **{k: str(out_dir / info[k]) for k in ("image_dir", "semantic_dir", "ann_file")}}
              for split, info in summary["splits"].items()}
    return {**summary, "splits": splits, "out_dir": str(out_dir), "reused": reused}


def preview_scenes(split_dir: str | Path, path: str | Path, n: int = 8) -> Path:
    """A PNG grid of the first ``n`` scenes of ``split_dir`` with mask overlays, boxes and class names."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure  # no pyplot: the Agg canvas, whatever the global backend
    from matplotlib.patches import Rectangle

    from splitattn.detection.data import decode_segmentation

    split_dir, path = Path(split_dir), Path(path)
    coco = json.loads((split_dir / "annotations.json").read_text())
    names = {c["id"]: c["name"] for c in coco["categories"]}
    by_image: dict[int, list[dict]] = {}
    for ann in coco["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    images = coco["images"][:n]
    if not images:
        raise ValueError(f"{split_dir} holds no images to preview")
    cols = min(4, len(images))
    rows = (len(images) + cols - 1) // cols
    palette = colormaps["tab10"]
    fig = Figure(figsize=(3 * cols, 3 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, info in zip(axes.flat, images):
        rgb = np.asarray(Image.open(split_dir / "images" / info["file_name"]).convert("RGB"), np.float32) / 255
        for ann in by_image.get(info["id"], []):
            colour = np.array(palette((ann["category_id"] - 1) % 10)[:3], np.float32)
            mask = decode_segmentation(ann["segmentation"], info["height"], info["width"]).astype(bool)
            rgb[mask] = 0.55 * rgb[mask] + 0.45 * colour
        ax.imshow(rgb, interpolation="nearest")
        for ann in by_image.get(info["id"], []):
            x, y, w, h = ann["bbox"]
            colour = palette((ann["category_id"] - 1) % 10)
            ax.add_patch(Rectangle((x - 0.5, y - 0.5), w, h, fill=False, edgecolor=colour, linewidth=1.5))
            ax.text(x - 0.5, y - 1.5, names.get(ann["category_id"], str(ann["category_id"])), fontsize=7,
                    color="white", bbox={"facecolor": colour, "edgecolor": "none", "pad": 1, "alpha": 0.85})
        ax.set_title(info["file_name"], fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path

"""Semantic-segmentation datasets (ADE20K, PASCAL VOC 2012, Pascal Context 59, Cityscapes, a folder of image /
label pairs) and transforms.

A sample is ``(image, label)``: ``image`` float32 ``(3, H, W)`` in ``[0, 1]`` (RGB, *not* normalised:
mean/std normalisation is the trainer's / model wrapper's job, so padding with 0 here is black, exactly
as PyTorch-Encoding pads its PIL images before normalising), ``label`` int64 ``(H, W)`` holding class
indices ``0..num_classes-1`` and ``ignore_index`` (default 255) where a pixel is not scored.

Label files are read as single-channel index maps (PNG mode ``L``/``P``/``I``; a palette PNG gives its
indices, never its colours), mapped by the dataset's ``label_map`` (ADE20K and Pascal Context: 0 -> ignore,
``v -> v - 1``, i.e. mmseg's ``reduce_zero_label``; Cityscapes label ids -> train ids) and checked *before* any
transform: a value that
is neither a class nor ``ignore_index`` raises :class:`ValueError` naming the file, the values and the
likely fix; nothing is silently clipped. ``SegmentationDataset.check()`` runs the same checks over the
whole split up front.

Transforms follow PyTorch-Encoding (``encoding/datasets/base.py`` ``_sync_transform``, HEAD e9faeb45):
random flip, random resize with the *long* side drawn uniformly from ``[0.5, 2.0] x base_size``
(GluonCV and older PyTorch-Encoding draw the *short* side: ``resize_side="short"``), pad right/bottom
to ``crop_size`` (image 0, label ``ignore_index``), random ``crop_size`` crop. Images are resized
bilinearly (PIL), labels with nearest neighbour. Randomness comes from torch's RNG (or a
``torch.Generator`` passed in), so ``torch.manual_seed`` makes it reproducible and DataLoader workers
get distinct streams.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..data.images import DatasetError, open_image, to_rgb

__all__ = [
    "ADE20K_CLASSES",
    "CITYSCAPES_CLASSES",
    "CITYSCAPES_TRAIN_IDS",
    "PCONTEXT_CLASSES",
    "VOC_CLASSES",
    "SegmentationDataset",
    "SegmentationEvalTransform",
    "SegmentationTrainTransform",
    "ade20k",
    "ade20k_label_map",
    "build_segmentation_data",
    "cityscapes",
    "cityscapes_label_map",
    "collate_segmentation",
    "folder",
    "pcontext",
    "reduce_zero_label_map",
    "voc",
]

# The 150 ADEChallengeData2016 classes, label value v (1..150) is ADE20K_CLASSES[v - 1]; names as in
# mmsegmentation's ADE20KDataset (short forms of objectInfo150.csv's first names).
ADE20K_CLASSES = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass", "cabinet",
    "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair", "car", "water",
    "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field", "armchair", "seat", "fence", "desk",
    "rock", "wardrobe", "lamp", "bathtub", "railing", "cushion", "base", "box", "column", "signboard",
    "chest of drawers", "counter", "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand",
    "path", "stairs", "runway", "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge",
    "bookcase", "blind", "coffee table", "toilet", "flower", "book", "hill", "bench", "countertop", "stove",
    "palm", "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus",
    "towel", "light", "truck", "tower", "chandelier", "awning", "streetlight", "booth", "television receiver",
    "airplane", "dirt track", "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle",
    "buffet", "poster", "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer", "plaything",
    "swimming pool", "stool", "barrel", "basket", "waterfall", "tent", "bag", "minibike", "cradle", "oven",
    "ball", "food", "step", "tank", "trade name", "microwave", "pot", "animal", "bicycle", "lake",
    "dishwasher", "screen", "blanket", "sculpture", "hood", "sconce", "vase", "traffic light", "tray",
    "ashcan", "fan", "pier", "crt screen", "plate", "monitor", "bulletin board", "shower", "radiator", "glass",
    "clock", "flag",
)

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)

# Pascal Context, 59 classes: label PNG value v (1..59) is PCONTEXT_CLASSES[v - 1], 0 is background (ignored).
# Names and order as mmsegmentation's PascalContextDataset59. PyTorch-Encoding lists no names: its class k is the
# k-th smallest of the 59 kept ids of the 459-class labels.txt (the sorted `_mapping` in its pcontext.py, copied
# by mmseg's tools/dataset_converters/pascal_context.py); labels.txt is alphabetical, so the orders agree.
PCONTEXT_CLASSES = (
    "aeroplane", "bag", "bed", "bedclothes", "bench", "bicycle", "bird", "boat", "book", "bottle", "building", "bus",
    "cabinet", "car", "cat", "ceiling", "chair", "cloth", "computer", "cow", "cup", "curtain", "dog", "door", "fence",
    "floor", "flower", "food", "grass", "ground", "horse", "keyboard", "light", "motorbike", "mountain", "mouse",
    "person", "plate", "platform", "pottedplant", "road", "rock", "sheep", "shelves", "sidewalk", "sign", "sky",
    "snow", "sofa", "table", "track", "train", "tree", "truck", "tvmonitor", "wall", "water", "window", "wood",
)

# Cityscapes: the 19 evaluated classes, train id t is CITYSCAPES_CLASSES[t].
CITYSCAPES_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation", "terrain",
    "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle",
)

# Cityscapes label id (gtFine *_labelIds.png; -1 = licence plate, never in a PNG) -> train id (255 = ignored), as
# cityscapesscripts' helpers/labels.py (where the licence plate's train id is -1: ignored here too).
CITYSCAPES_TRAIN_IDS = {
    -1: 255, 0: 255, 1: 255, 2: 255, 3: 255, 4: 255, 5: 255, 6: 255, 7: 0, 8: 1, 9: 255, 10: 255, 11: 2, 12: 3,
    13: 4, 14: 255, 15: 255, 16: 255, 17: 5, 18: 255, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12, 26: 13,
    27: 14, 28: 15, 29: 255, 30: 255, 31: 16, 32: 17, 33: 18,
}

_LABEL_MODES = ("L", "P", "I", "I;16", "I;16L", "I;16B", "1")
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


# ----------------------------------------------------------------------------------------------------
# conversions


def _as_pil_image(image) -> Image.Image:
    """PIL RGB image from a PIL image (any mode; 16-bit scaled, see :func:`splitattn.data.images.to_rgb`) or a
    uint8 ``(H, W[, C])`` array."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    if not isinstance(image, Image.Image):
        raise TypeError(f"expected a PIL image or a uint8 numpy array, got {type(image).__name__}")
    return to_rgb(image)


def _as_pil_label(label) -> Image.Image:
    """Single-channel PIL label (mode ``L`` for values 0..255, else ``I``) from PIL or an integer array."""
    if isinstance(label, Image.Image):
        if label.mode not in _LABEL_MODES:
            raise ValueError(f"label image has mode {label.mode!r}; expected a single-channel index map "
                             f"({', '.join(_LABEL_MODES)})")
        label = _label_array(label)
    label = np.asarray(label)
    if label.ndim != 2 or not np.issubdtype(label.dtype, np.integer):
        raise ValueError(f"label must be an integer (H, W) array, got {label.dtype} {label.shape}")
    if label.size and label.min() >= 0 and label.max() <= 255:
        return Image.fromarray(label.astype(np.uint8), "L")
    return Image.fromarray(label.astype(np.int32), "I")


def _label_array(label: Image.Image) -> np.ndarray:
    """int64 ``(H, W)`` array of a single-channel label image (palette images give their indices)."""
    return np.asarray(label).astype(np.int64)


def _image_tensor(image: Image.Image) -> torch.Tensor:
    array = np.asarray(image, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)


def _label_tensor(label: Image.Image) -> torch.Tensor:
    return torch.from_numpy(_label_array(label))


def _resized_size(w: int, h: int, target: int, side: str) -> tuple[int, int]:
    """``(new_w, new_h)`` with the long (PyTorch-Encoding HEAD) or short (GluonCV) side set to ``target``."""
    if side == "long":
        if h > w:
            return max(1, int(1.0 * w * target / h + 0.5)), target
        return target, max(1, int(1.0 * h * target / w + 0.5))
    if side == "short":
        if h > w:
            return target, max(1, int(1.0 * h * target / w))
        return max(1, int(1.0 * w * target / h)), target
    raise ValueError(f"resize_side must be 'long' or 'short', got {side!r}")


def _pair(size) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    h, w = (int(v) for v in size)
    return h, w


_RESAMPLE = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST}


def _resample(name: str):
    if name not in _RESAMPLE:
        raise ValueError(f"interpolation must be one of {sorted(_RESAMPLE)}, got {name!r}")
    return _RESAMPLE[name]


# ----------------------------------------------------------------------------------------------------
# transforms


class SegmentationTrainTransform:
    """PyTorch-Encoding training augmentation on a ``(PIL image, label)`` pair -> ``(float CHW, int64 HW)``.

    Steps: flip with ``flip_prob``; resize so that the ``resize_side`` ("long": PyTorch-Encoding HEAD;
    "short": GluonCV / older PyTorch-Encoding) equals an integer drawn uniformly from
    ``[int(base_size * lo), int(base_size * hi)]`` (image ``interpolation``, label nearest); pad right and
    bottom up to ``crop_size`` (image 0 = black in ``[0, 1]`` space, label ``ignore_index``); random
    ``crop_size`` crop. The label may be a PIL image or an integer array (values are not changed, so it
    must already be mapped, e.g. ADE20K 0 -> ignore).
    """

    def __init__(self, base_size: int = 520, crop_size: int | tuple[int, int] = 480,
                 scale_range: tuple[float, float] = (0.5, 2.0), flip_prob: float = 0.5, ignore_index: int = 255,
                 resize_side: str = "long", interpolation: str = "bilinear",
                 generator: torch.Generator | None = None):
        lo, hi = int(base_size * scale_range[0]), int(base_size * scale_range[1])
        if not 1 <= lo <= hi:
            raise ValueError(f"scale_range {scale_range} x base_size {base_size} gives an empty size range "
                             f"[{lo}, {hi}]")
        _resized_size(2, 1, 1, resize_side)  # validates resize_side
        self.base_size, self.crop_size, self.scale_range = int(base_size), _pair(crop_size), tuple(scale_range)
        self.flip_prob, self.ignore_index = float(flip_prob), int(ignore_index)
        self.resize_side, self.interpolation, self.generator = resize_side, interpolation, generator
        self._resample = _resample(interpolation)
        self._size_range = (lo, hi)

    def _randint(self, low: int, high_inclusive: int) -> int:
        return int(torch.randint(low, high_inclusive + 1, (1,), generator=self.generator).item())

    def __call__(self, image, label) -> tuple[torch.Tensor, torch.Tensor]:
        image, label = _as_pil_image(image), _as_pil_label(label)
        if image.size != label.size:
            raise ValueError(f"image size {image.size} (W, H) != label size {label.size}")
        if float(torch.rand((1,), generator=self.generator).item()) < self.flip_prob:
            image = image.transpose(Image.FLIP_LEFT_RIGHT)
            label = label.transpose(Image.FLIP_LEFT_RIGHT)
        w, h = image.size
        ow, oh = _resized_size(w, h, self._randint(*self._size_range), self.resize_side)
        image = _image_tensor(image.resize((ow, oh), self._resample))
        label = _label_tensor(label.resize((ow, oh), Image.NEAREST))
        ch, cw = self.crop_size
        padh, padw = max(ch - oh, 0), max(cw - ow, 0)
        if padh or padw:
            image = torch.nn.functional.pad(image, (0, padw, 0, padh), value=0.0)
            label = torch.nn.functional.pad(label, (0, padw, 0, padh), value=self.ignore_index)
        y1 = self._randint(0, label.shape[0] - ch)
        x1 = self._randint(0, label.shape[1] - cw)
        return (image[:, y1:y1 + ch, x1:x1 + cw].contiguous(), label[y1:y1 + ch, x1:x1 + cw].contiguous())

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(base_size={self.base_size}, crop_size={self.crop_size}, "
                f"scale_range={self.scale_range}, flip_prob={self.flip_prob}, ignore_index={self.ignore_index}, "
                f"resize_side={self.resize_side!r}, interpolation={self.interpolation!r})")


class SegmentationEvalTransform:
    """Evaluation: the image optionally resized (``resize_side`` set to ``base_size``), the label untouched.

    Metrics are computed against the label at its *original* resolution: predict on the (resized)
    image, upsample the prediction to the label's size (``splitattn.segmentation.metrics.predict_logits``
    does) and score there. ``base_size=None`` (the PyTorch-Encoding multi-scale protocol, where the
    scaling happens in the evaluator) keeps the image as it is.
    """

    def __init__(self, base_size: int | None = None, resize_side: str = "short", interpolation: str = "bilinear"):
        _resized_size(2, 1, 1, resize_side)
        self.base_size, self.resize_side, self.interpolation = base_size, resize_side, interpolation
        self._resample = _resample(interpolation)

    def __call__(self, image, label=None) -> tuple[torch.Tensor, torch.Tensor | None]:
        image = _as_pil_image(image)
        label_t = None
        if label is not None:
            label = _as_pil_label(label)
            if image.size != label.size:
                raise ValueError(f"image size {image.size} (W, H) != label size {label.size}")
            label_t = _label_tensor(label)
        if self.base_size:
            w, h = image.size
            image = image.resize(_resized_size(w, h, int(self.base_size), self.resize_side), self._resample)
        return _image_tensor(image), label_t

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(base_size={self.base_size}, resize_side={self.resize_side!r}, "
                f"interpolation={self.interpolation!r})")


def _to_tensors(image, label):
    return _image_tensor(_as_pil_image(image)), (None if label is None else _label_tensor(_as_pil_label(label)))


def collate_segmentation(batch):
    """``(images, labels)``: stacked tensors when every sample has the same size (training crops),
    else lists (evaluation at original sizes). Missing labels (``None``) give a list of ``None``."""
    images, labels = zip(*batch)
    if all(img.shape == images[0].shape for img in images):
        images = torch.stack(images)
    else:
        images = list(images)
    if any(lab is None for lab in labels):
        labels = list(labels)
    elif all(lab.shape == labels[0].shape for lab in labels):
        labels = torch.stack(labels)
    else:
        labels = list(labels)
    return images, labels


# ----------------------------------------------------------------------------------------------------
# dataset


class SegmentationDataset(torch.utils.data.Dataset):
    """Pairs of image and label files.

    ``label_map`` (``np.ndarray[int64] -> np.ndarray``) turns a label file's raw values into class
    indices / ``ignore_index``; ``label_hint`` is appended to the error raised for values outside
    ``0..num_classes-1`` and ``ignore_index``. ``transform(pil_rgb_image, pil_label_or_None)`` returns the
    ``(image, label)`` tensors; without one the sample is returned at its original size.
    """

    def __init__(self, images: Sequence[str | Path], labels: Sequence[str | Path] | None, num_classes: int,
                 ignore_index: int = 255, label_map: Callable[[np.ndarray], np.ndarray] | None = None,
                 transform: Callable | None = None, class_names: Sequence[str] | None = None,
                 label_hint: str = "", name: str = "segmentation"):
        self.images = [Path(p) for p in images]
        self.labels = None if labels is None else [Path(p) for p in labels]
        if not self.images:
            raise ValueError(f"{name}: no images")
        if self.labels is not None and len(self.labels) != len(self.images):
            raise ValueError(f"{name}: {len(self.images)} images but {len(self.labels)} label files")
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if 0 <= ignore_index < num_classes:
            raise ValueError(f"ignore_index {ignore_index} collides with a class index (num_classes {num_classes})")
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class names for {num_classes} classes")
        self.num_classes, self.ignore_index = int(num_classes), int(ignore_index)
        self.label_map, self.transform, self.label_hint, self.name = label_map, transform, label_hint, name
        self.class_names = None if class_names is None else list(class_names)

    def __len__(self) -> int:
        return len(self.images)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.name!r}, {len(self)} images, num_classes={self.num_classes}, "
                f"ignore_index={self.ignore_index}, transform={self.transform!r})")

    # -- loading --------------------------------------------------------------------------------------

    def load_image(self, index: int) -> Image.Image:
        return open_image(self.images[index])

    def load_label(self, index: int) -> np.ndarray | None:
        """Mapped and validated int64 ``(H, W)`` label of sample ``index`` (``None`` for unlabeled sets)."""
        if self.labels is None:
            return None
        path = self.labels[index]
        if not path.is_file():
            raise FileNotFoundError(f"{self.name}: label file {path} (for image {self.images[index]}) does not exist")
        with Image.open(path) as img:
            if img.mode not in _LABEL_MODES:
                raise ValueError(f"{self.name}: label file {path} has mode {img.mode!r}; expected a single-channel "
                                 "index map (mode L / P / I: class indices, not colours). Convert colour-coded "
                                 "labels to index PNGs first." + (f" {self.label_hint}" if self.label_hint else ""))
            raw = _label_array(img)
        try:
            label = raw if self.label_map is None else np.asarray(self.label_map(raw)).astype(np.int64)
        except ValueError as err:  # a label map that refuses raw values it has no meaning for
            raise ValueError(f"{self.name}: label file {path}: {err}"
                             + (f" {self.label_hint}" if self.label_hint else "")) from None
        if label.shape != raw.shape:
            raise ValueError(f"{self.name}: label_map changed the label shape {raw.shape} -> {label.shape}")
        self._validate_values(label, path)
        return label

    def _validate_values(self, label: np.ndarray, path: Path) -> None:
        values = np.unique(label)
        bad = values[((values < 0) | (values >= self.num_classes)) & (values != self.ignore_index)]
        if bad.size:
            shown = ", ".join(str(int(v)) for v in bad[:12]) + (" ..." if bad.size > 12 else "")
            mapped = " after the dataset's label mapping" if self.label_map is not None else ""
            raise ValueError(f"{self.name}: label file {path} holds value(s) {shown}{mapped}, outside the classes "
                             f"0..{self.num_classes - 1} and ignore_index {self.ignore_index}."
                             + (f" {self.label_hint}" if self.label_hint else ""))

    def _check_size(self, image_size: tuple[int, int], label: np.ndarray, index: int) -> None:
        if (label.shape[1], label.shape[0]) != tuple(image_size):
            raise ValueError(f"{self.name}: image {self.images[index]} is {image_size[0]}x{image_size[1]} (WxH) but "
                             f"its label {self.labels[index]} is {label.shape[1]}x{label.shape[0]}")

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        image = self.load_image(index)
        label = self.load_label(index)
        if label is not None:
            self._check_size(image.size, label, index)
            label = _as_pil_label(label)
        if self.transform is None:
            return _to_tensors(image, label)
        return self.transform(image, label)

    def check(self, max_errors: int = 20) -> dict:
        """Scan every label (values, size vs image header) up front; one ValueError lists all problems.

        Returns ``{"images", "class_pixels" (per class), "ignored_pixels"}``.
        """
        counts = np.zeros(self.num_classes, np.int64)
        ignored, errors = 0, []
        for i in range(len(self)):
            try:
                if not self.images[i].is_file():
                    raise FileNotFoundError(f"{self.name}: image file {self.images[i]} does not exist")
                label = self.load_label(i)
                if label is None:
                    continue
                with Image.open(self.images[i]) as img:  # header only
                    self._check_size(img.size, label, i)
                valid = label != self.ignore_index
                counts += np.bincount(label[valid].ravel(), minlength=self.num_classes)
                ignored += int((~valid).sum())
            except (ValueError, OSError) as err:
                errors.append(str(err))
                if len(errors) >= max_errors:
                    break
        if errors:
            more = " (stopped early)" if len(errors) >= max_errors else ""
            raise ValueError(f"{self.name}: {len(errors)} bad sample(s){more}:\n  " + "\n  ".join(errors))
        return {"images": len(self), "class_pixels": counts.tolist(), "ignored_pixels": ignored}


# ----------------------------------------------------------------------------------------------------
# builders


def _pairs(image_dir: Path, label_dir: Path, name: str, image_suffixes=_IMAGE_SUFFIXES) -> tuple[list, list]:
    if not image_dir.is_dir():
        raise DatasetError(f"{name}: image folder {image_dir} does not exist")
    if not label_dir.is_dir():
        raise DatasetError(f"{name}: label folder {label_dir} does not exist")
    images = sorted(p for p in image_dir.iterdir() if p.suffix.lower() in image_suffixes and p.is_file())
    if not images:
        raise ValueError(f"{name}: no images ({'/'.join(image_suffixes)}) in {image_dir}")
    labels = [label_dir / f"{p.stem}.png" for p in images]
    missing = [str(p) for p in labels if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{name}: {len(missing)} of {len(images)} images have no label PNG, e.g. "
                                f"{', '.join(missing[:3])}")
    return images, labels


def reduce_zero_label_map(ignore_index: int = 255) -> Callable[[np.ndarray], np.ndarray]:
    """0 -> ``ignore_index``, ``v -> v - 1`` (mmseg's ``reduce_zero_label``; ADE20K "other", Pascal Context
    background). Unlike mmseg, a raw 255 becomes 254 (then refused as out of range): it is not a value these
    label files hold, and is most often a sign of labels that were already reduced."""
    def reduce_zero_label(raw: np.ndarray) -> np.ndarray:
        out = raw - 1
        out[raw == 0] = ignore_index
        return out
    return reduce_zero_label


def _listed_pairs(root: Path, sets_dir: Path, split: str, label_dir: str, name: str) -> tuple[list, list]:
    """VOC-style pairs: ids from ``{sets_dir}/{split}.txt``, ``{root}/JPEGImages/{id}.jpg`` and
    ``{root}/{label_dir}/{id}.png``."""
    split_file = sets_dir / f"{split}.txt"
    if not split_file.is_file():
        available = sorted(p.stem for p in sets_dir.glob("*.txt"))
        raise FileNotFoundError(f"{name}: split file {split_file} does not exist (available: {', '.join(available)})")
    ids = [line.strip() for line in split_file.read_text().splitlines() if line.strip()]
    if not ids:
        raise ValueError(f"{name}: split file {split_file} lists no images")
    images = [root / "JPEGImages" / f"{i}.jpg" for i in ids]
    labels = [root / label_dir / f"{i}.png" for i in ids]
    for kind, paths in (("image", images), ("label", labels)):
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"{name} {split}: {len(missing)} of {len(ids)} {kind} files are missing, e.g. "
                                    f"{', '.join(missing[:3])}")
    return images, labels


def ade20k_label_map(ignore_index: int = 255) -> Callable[[np.ndarray], np.ndarray]:
    """ADE20K 0 ("other") -> ``ignore_index``, ``v -> v - 1`` (mmseg ``reduce_zero_label``)."""
    return reduce_zero_label_map(ignore_index)


def ade20k(root: str | Path, split: str = "training", transform: Callable | None = None,
           ignore_index: int = 255, reduce_zero_label: bool = True) -> SegmentationDataset:
    """ADE20K SceneParsing (``ADEChallengeData2016``): ``images/{split}/*.jpg``, ``annotations/{split}/*.png``.

    ``root`` is the ``ADEChallengeData2016`` folder or its parent; ``split`` is ``training`` or
    ``validation`` (``train``/``val`` accepted). 150 classes; annotation value 0 ("other") is ignored
    and ``v`` becomes class ``v - 1``. ``reduce_zero_label=False`` is for annotations that are already
    0..149 with ``ignore_index`` for "other".
    """
    split = {"train": "training", "val": "validation"}.get(split, split)
    if split not in ("training", "validation"):
        raise ValueError(f"ADE20K split must be 'training' or 'validation', got {split!r}")
    root = Path(root)
    if not (root / "images").is_dir() and (root / "ADEChallengeData2016" / "images").is_dir():
        root = root / "ADEChallengeData2016"
    if not (root / "images").is_dir():
        raise FileNotFoundError(f"ADE20K: {root} has no images/ folder; expected the ADEChallengeData2016 layout "
                                f"images/{{training,validation}}/*.jpg + annotations/{{training,validation}}/*.png")
    images, labels = _pairs(root / "images" / split, root / "annotations" / split, f"ADE20K {split}")
    hint = ("ADE20K ADEChallengeData2016 annotations hold 0 ('other', ignored) and 1..150; values above 150 "
            "mean these are not the 150-class challenge annotations (e.g. the full ADE20K index or colour-coded "
            "maps)." if reduce_zero_label else
            f"with reduce_zero_label=False the annotations must already be 0..149 plus {ignore_index}; raw "
            "ADEChallengeData2016 annotations (0..150) need reduce_zero_label=True.")
    if reduce_zero_label:
        hint += (f" Annotations that are already reduced (0..149 with {ignore_index} for 'other') need "
                 "reduce_zero_label=False.")
    return SegmentationDataset(images, labels, 150, ignore_index=ignore_index,
                               label_map=ade20k_label_map(ignore_index) if reduce_zero_label else None,
                               transform=transform, class_names=ADE20K_CLASSES, label_hint=hint,
                               name=f"ADE20K {split}")


def voc(root: str | Path, split: str = "train", transform: Callable | None = None,
        label_dir: str = "SegmentationClass") -> SegmentationDataset:
    """PASCAL VOC 2012: ``JPEGImages/{id}.jpg``, ``{label_dir}/{id}.png`` (palette PNG: index 0..20, 255 =
    ignore border), ids from ``ImageSets/Segmentation/{split}.txt``. ``root`` is ``VOC2012``, ``VOCdevkit``
    or the folder holding ``VOCdevkit``. 21 classes including background; ignore index 255."""
    root = Path(root)
    for candidate in (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"):
        if (candidate / "ImageSets" / "Segmentation").is_dir():
            root = candidate
            break
    else:
        raise FileNotFoundError(f"VOC: no ImageSets/Segmentation under {root} (tried {root}, {root}/VOC2012, "
                                f"{root}/VOCdevkit/VOC2012)")
    images, labels = _listed_pairs(root, root / "ImageSets" / "Segmentation", split, label_dir, "VOC")
    hint = ("VOC SegmentationClass PNGs are palette images holding 0..20 and 255 (border / difficult); "
            "labels saved as RGB colours must be converted back to indices.")
    return SegmentationDataset(images, labels, 21, ignore_index=255, transform=transform, class_names=VOC_CLASSES,
                               label_hint=hint, name=f"VOC {split}")


_PCONTEXT_CONVERTER = ("convert the Pascal Context annotations (trainval_merged.json) with mmsegmentation's "
                       "tools/dataset_converters/pascal_context.py (needs the `detail` API), which writes "
                       "SegmentationClassContext/*.png and ImageSets/SegmentationContext/{train,val}.txt")


def pcontext(root: str | Path, split: str = "train", transform: Callable | None = None, ignore_index: int = 255,
             reduce_zero_label: bool = True, label_dir: str = "SegmentationClassContext") -> SegmentationDataset:
    """Pascal Context, 59 classes, as mmseg's ``PascalContextDataset59`` and PyTorch-Encoding read it.

    Layout (mmseg's ``tools/dataset_converters/pascal_context.py`` output): ``VOC2010/JPEGImages/{id}.jpg``,
    ``VOC2010/{label_dir}/{id}.png`` holding 0 (background) and 1..59, ids from
    ``VOC2010/ImageSets/SegmentationContext/{split}.txt``. ``root`` is ``VOC2010``, ``VOCdevkit`` or the folder
    holding ``VOCdevkit``; ``split`` is ``train`` or ``val`` (``training``/``validation`` accepted). Background is
    ignored and ``v`` becomes class ``v - 1`` (mmseg's ``reduce_zero_label=True``; Encoding's ``mask - 1`` with
    -1 ignored), so the classes are 0..58 (:data:`PCONTEXT_CLASSES`). ``reduce_zero_label=False`` is for labels
    that are already 0..58 with ``ignore_index`` for background.
    """
    split = {"training": "train", "validation": "val"}.get(split, split)
    root = Path(root)
    candidates = (root, root / "VOC2010", root / "VOCdevkit" / "VOC2010")
    for candidate in candidates:
        if (candidate / "ImageSets" / "SegmentationContext").is_dir():
            root = candidate
            break
    else:
        voc2010 = next((c for c in candidates if (c / "JPEGImages").is_dir()), None)
        if voc2010 is not None:
            raise FileNotFoundError(f"Pascal Context: {voc2010} has JPEGImages but no ImageSets/SegmentationContext; "
                                    f"{_PCONTEXT_CONVERTER}")
        raise FileNotFoundError(f"Pascal Context: no ImageSets/SegmentationContext under {root} (tried "
                                f"{', '.join(str(c) for c in candidates)}); expected VOCdevkit/VOC2010 with "
                                f"JPEGImages, {label_dir} and ImageSets/SegmentationContext")
    if not (root / label_dir).is_dir():
        raise FileNotFoundError(f"Pascal Context: label folder {root / label_dir} does not exist; "
                                f"{_PCONTEXT_CONVERTER}")
    images, labels = _listed_pairs(root, root / "ImageSets" / "SegmentationContext", split, label_dir,
                                   "Pascal Context")
    if reduce_zero_label:
        hint = ("Pascal Context 59-class label PNGs hold 0 (background, ignored) and 1..59; values above 59 look like "
                "the raw 459-class labels (labels.txt ids): " + _PCONTEXT_CONVERTER + f". Labels that are already "
                f"reduced (0..58 with {ignore_index} for background) need reduce_zero_label=False.")
    else:
        hint = (f"with reduce_zero_label=False the labels must already be 0..58 plus {ignore_index}; the converter's "
                "PNGs (0 = background, 1..59) need reduce_zero_label=True.")
    return SegmentationDataset(images, labels, 59, ignore_index=ignore_index,
                               label_map=reduce_zero_label_map(ignore_index) if reduce_zero_label else None,
                               transform=transform, class_names=PCONTEXT_CLASSES, label_hint=hint,
                               name=f"Pascal Context {split}")


def cityscapes_label_map(ignore_index: int = 255) -> Callable[[np.ndarray], np.ndarray]:
    """Cityscapes label ids (0..33, -1 licence plate) -> train ids 0..18, every other id -> ``ignore_index``
    (:data:`CITYSCAPES_TRAIN_IDS`). A value that is no label id raises :class:`ValueError`."""
    lut = np.full(34, ignore_index, np.int64)
    for label_id, train_id in CITYSCAPES_TRAIN_IDS.items():
        if label_id >= 0 and train_id != 255:
            lut[label_id] = train_id

    def label_ids_to_train_ids(raw: np.ndarray) -> np.ndarray:
        known = (raw >= 0) & (raw < lut.size)
        unknown = np.unique(raw[~known & (raw != -1)])
        if unknown.size:
            shown = ", ".join(str(int(v)) for v in unknown[:12]) + (" ..." if unknown.size > 12 else "")
            raise ValueError(f"value(s) {shown} are not Cityscapes label ids (0..33, -1 licence plate)")
        out = np.full(raw.shape, ignore_index, np.int64)
        out[known] = lut[raw[known]]
        return out
    return label_ids_to_train_ids


_CITYSCAPES_LABEL_TYPES = ("auto", "labelTrainIds", "labelIds")


def cityscapes(root: str | Path, split: str = "train", transform: Callable | None = None, labels: bool = True,
               label_type: str = "auto") -> SegmentationDataset:
    """Cityscapes (fine annotations), the 19 evaluated classes (:data:`CITYSCAPES_CLASSES`), ignore index 255.

    Layout: ``leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png`` with ``gtFine/{split}/{city}/{stem}_gtFine_
    labelTrainIds.png`` (train ids 0..18 + 255, written by cityscapesscripts' ``createTrainIdLabelImgs``) or
    ``{stem}_gtFine_labelIds.png`` (label ids 0..33, mapped to train ids here; the ids outside the 19 are
    ignored). ``root`` holds ``leftImg8bit`` and ``gtFine``, or holds a ``cityscapes`` folder that does.
    ``label_type="auto"`` reads the train-id files when every image of the split has one, else the label-id files
    (same classes either way); ``"labelTrainIds"`` / ``"labelIds"`` force one. ``split`` is ``train``, ``val`` or
    ``test``; the test labels are withheld (``gtFine/test`` holds placeholders), so ``test`` needs
    ``labels=False``: images only, for predictions.
    """
    if split not in ("train", "val", "test"):
        raise ValueError(f"Cityscapes split must be 'train', 'val' or 'test' (gtFine), got {split!r}")
    if label_type not in _CITYSCAPES_LABEL_TYPES:
        raise ValueError(f"Cityscapes label_type must be one of {', '.join(_CITYSCAPES_LABEL_TYPES)}, "
                         f"got {label_type!r}")
    if split == "test" and labels:
        raise ValueError("Cityscapes test labels are withheld (gtFine/test holds placeholder maps with no classes): "
                         "evaluate on 'val', or pass labels=False for the test images alone")
    root = Path(root)
    if not (root / "leftImg8bit").is_dir() and (root / "cityscapes" / "leftImg8bit").is_dir():
        root = root / "cityscapes"
    if not (root / "leftImg8bit").is_dir():
        raise FileNotFoundError(f"Cityscapes: {root} has no leftImg8bit/ folder; expected the Cityscapes layout "
                                "leftImg8bit/{train,val,test}/CITY/*_leftImg8bit.png + "
                                "gtFine/{train,val,test}/CITY/*_gtFine_labelIds.png")
    name = f"Cityscapes {split}"
    image_dir = root / "leftImg8bit" / split
    if not image_dir.is_dir():
        raise FileNotFoundError(f"{name}: image folder {image_dir} does not exist")
    images = sorted(image_dir.glob("*/*_leftImg8bit.png"))
    if not images:
        raise ValueError(f"{name}: no CITY/*_leftImg8bit.png images in {image_dir}")
    if not labels:
        return SegmentationDataset(images, None, 19, ignore_index=255, transform=transform,
                                   class_names=CITYSCAPES_CLASSES, name=name)
    label_dir = root / "gtFine" / split
    if not label_dir.is_dir():
        raise FileNotFoundError(f"{name}: label folder {label_dir} does not exist; unpack gtFine_trainvaltest.zip "
                                f"into {root}")
    stems = [label_dir / p.parent.name / p.name[: -len("_leftImg8bit.png")] for p in images]
    train_id_files = [Path(f"{s}_gtFine_labelTrainIds.png") for s in stems]
    if label_type == "auto":
        label_type = "labelTrainIds" if all(p.is_file() for p in train_id_files) else "labelIds"
    label_files = train_id_files if label_type == "labelTrainIds" else [Path(f"{s}_gtFine_labelIds.png") for s in stems]
    missing = [(image, label) for image, label in zip(images, label_files) if not label.is_file()]
    if missing:
        also = " (nor a _gtFine_labelTrainIds.png)" if label_files is not train_id_files else ""
        raise FileNotFoundError(f"{name}: {len(missing)} of {len(images)} images have no _gtFine_{label_type}.png "
                                f"label{also}, e.g. {missing[0][1]} for {missing[0][0]}")
    if label_type == "labelTrainIds":
        hint = ("Cityscapes *_gtFine_labelTrainIds.png (cityscapesscripts' createTrainIdLabelImgs) hold train ids "
                "0..18 and 255; for label ids (0..33) pass label_type='labelIds'.")
    else:
        hint = ("Cityscapes *_gtFine_labelIds.png hold label ids 0..33; colour (*_color.png) or instance "
                "(*_instanceIds.png) maps are not label ids.")
    return SegmentationDataset(images, label_files, 19, ignore_index=255,
                               label_map=cityscapes_label_map(255) if label_type == "labelIds" else None,
                               transform=transform, class_names=CITYSCAPES_CLASSES, label_hint=hint, name=name)


def folder(root: str | Path, split: str = "train", transform: Callable | None = None, num_classes: int = 0,
           class_names: Sequence[str] | None = None, label_dir: str = "labels",
           ignore_index: int = 255) -> SegmentationDataset:
    """Your own data: ``{root}/{split}/images/NAME.{jpg,png,…}`` with ``{root}/{split}/{label_dir}/NAME.png`` index
    maps holding ``0..num_classes-1`` and ``ignore_index``."""
    if num_classes < 2:
        raise DatasetError(f"a folder dataset needs data.num_classes (>= 2), got {num_classes}")
    if class_names and len(class_names) != num_classes:
        raise DatasetError(f"data.class_names lists {len(class_names)} names for data.num_classes={num_classes}")
    base = Path(root) / split
    images, labels = _pairs(base / "images", base / label_dir, f"{root} {split}")
    hint = (f"label maps of this dataset hold class indices 0..{num_classes - 1} and {ignore_index} (ignored); "
            "check data.num_classes")
    return SegmentationDataset(images, labels, num_classes, ignore_index=ignore_index, transform=transform,
                               class_names=class_names or [f"class {i}" for i in range(num_classes)],
                               label_hint=hint, name=f"{root} {split}")


# (builder, default training split, default validation split)
# class names of the datasets the released segmenters were trained on
DATASET_CLASSES = {"ade20k": ADE20K_CLASSES, "pcontext": PCONTEXT_CLASSES, "cityscapes": CITYSCAPES_CLASSES,
                   "voc": VOC_CLASSES}

DATASETS = {"ade20k": (ade20k, "training", "validation"), "voc": (voc, "train", "val"),
            "pcontext": (pcontext, "train", "val"), "cityscapes": (cityscapes, "train", "val"),
            "folder": (folder, "train", "val")}


def build_segmentation_data(data, train: bool = True):
    """(training set with the random scale / crop / flip transform or None, validation set at full resolution)
    from a config's ``data`` section. The validation labels keep their resolution: predictions are resized
    to them."""
    builder, train_split, val_split = DATASETS[data.dataset]
    options = {"num_classes": data.num_classes, "class_names": data.class_names or None,
               "label_dir": data.label_dir} if data.dataset == "folder" else {}
    train_set = None
    if train:
        transform = SegmentationTrainTransform(data.base_size, data.crop_size, tuple(data.scale_range), data.flip_prob)
        train_set = builder(data.root, data.train_split or train_split, transform=transform, **options)
    val_set = builder(data.root, data.val_split or val_split, transform=SegmentationEvalTransform(), **options)
    if train_set is not None and val_set.num_classes != train_set.num_classes:
        raise DatasetError(f"{data.root}: training and validation splits disagree on the number of classes")
    return train_set, val_set

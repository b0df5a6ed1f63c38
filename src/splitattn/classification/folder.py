"""ImageNet-style folders: ``root/split/CLASS/*.jpg``, with unreadable images skipped and named."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.data import Dataset

from ..data.images import DatasetError, ImageError, open_image
from ..seeding import derive_seed

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".jfif")


def scan_folder(root: Path, classes: list[str] | None = None) -> tuple[list[str], list[tuple[str, int]]]:
    """Class names and ``(path, label)`` samples, checked before any training starts."""
    if not root.is_dir():
        raise DatasetError(f"data folder {root} does not exist: expected {root}/CLASS/*.jpg "
                           "(set data.root to the folder that holds train/ and val/)")
    found = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if classes is None:
        classes = found
    elif set(found) != set(classes):
        missing, extra = sorted(set(classes) - set(found)), sorted(set(found) - set(classes))
        raise DatasetError(f"{root} has different class folders from the training split "
                           f"(missing: {missing[:5]}, extra: {extra[:5]}); both splits need the same classes")
    if not classes:
        raise DatasetError(f"{root} has no class folders: expected {root}/CLASS/*.jpg")
    samples, empty = [], []
    for label, name in enumerate(classes):
        files = sorted(p for p in (root / name).rglob("*") if p.suffix.lower() in IMG_EXTENSIONS and p.is_file())
        if not files:
            empty.append(name)
        samples += [(str(p), label) for p in files]
    if empty:
        raise DatasetError(f"class folder(s) with no images in {root}: {', '.join(empty[:10])}"
                           f"{' …' if len(empty) > 10 else ''}; add images or remove the folder(s)")
    return classes, samples


class ImageFolderDataset(Dataset):
    """Images of ``root/CLASS/*``; an unreadable file gives an :class:`Unreadable` (its path), which
    :func:`collate_skipping` leaves out, or raises when ``strict``. Each sample's augmentation is seeded by
    (seed, epoch, index)."""

    def __init__(self, root: str | Path, transform: Callable | None = None, classes: list[str] | None = None,
                 strict: bool = False, seed: int = 0):
        self.root = Path(root)
        self.classes, self.samples = scan_folder(self.root, classes)
        self.transform = transform
        self.strict = strict
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int):
        """The RGB image of sample ``index``, or None when the file is unreadable (raises when ``strict``)."""
        path = self.samples[index][0]
        try:
            return open_image(path)
        except ImageError as err:
            if self.strict:
                raise DatasetError(f"{err} (data.strict=false skips such files)") from None
            return None

    def __getitem__(self, index: int):
        img = self.load(index)
        if img is None:
            return Unreadable(self.samples[index][0])
        if self.transform is not None:
            state = random.getstate()
            with torch.random.fork_rng(devices=[]):
                seed = derive_seed(self.seed, self.epoch, index)
                torch.manual_seed(seed)
                random.seed(seed)
                img = self.transform(img)
            random.setstate(state)
        return img, self.samples[index][1]


class Unreadable(str):
    """The path of a sample whose image could not be read."""


def collate_skipping(batch: list) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Stack the readable samples; also return the paths of the unreadable ones."""
    good = [item for item in batch if not isinstance(item, Unreadable)]
    skipped = [str(item) for item in batch if isinstance(item, Unreadable)]
    if not good:
        return torch.empty(0), torch.empty(0, dtype=torch.long), skipped
    images = torch.stack([item[0] for item in good])
    labels = torch.tensor([item[1] for item in good], dtype=torch.long)
    return images, labels, skipped

"""Fashion-MNIST from the original IDX files (Zalando), as Debian's ``dataset-fashion-mnist`` installs them.

60,000 training and 10,000 test images, 28×28 grayscale, 10 balanced classes. Files are read
directly (gzipped or not); torchvision's downloader is used only when asked to and online.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

from .folder import DatasetError

CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
          "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def _find(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / f"{stem}.gz", folder / stem, folder / "FashionMNIST" / "raw" / stem):
        if candidate.is_file():
            return candidate
    return None


def _read_idx(path: Path, magic: int, ndim: int) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            raw = handle.read()
    except (OSError, EOFError) as err:
        raise DatasetError(f"{path} is unreadable or truncated ({err}); reinstall dataset-fashion-mnist") from None
    header = 4 + 4 * ndim
    if len(raw) < header or int.from_bytes(raw[:4], "big") != magic:
        raise DatasetError(f"{path} is not an IDX file with {ndim} dimension(s) (bad magic number)")
    shape = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, np.uint8, offset=header)
    if data.size != int(np.prod(shape)):
        raise DatasetError(f"{path} holds {data.size} bytes of data, its header promises {int(np.prod(shape))}: "
                           "the file is truncated; reinstall dataset-fashion-mnist")
    return data.reshape(shape)


def load_fashion_mnist(root: str | Path | None, split: str,
                       download: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images uint8 (N, 28, 28), labels int64 (N,))`` for ``split`` 'train' or 'test'."""
    if split not in _FILES:
        raise DatasetError(f"Fashion-MNIST split must be 'train' or 'test', got {split!r}")
    folders = [Path(root)] if root else [DEBIAN_DIR]
    image_stem, label_stem = _FILES[split]
    for folder in folders:
        images, labels = _find(folder, image_stem), _find(folder, label_stem)
        if images and labels:
            break
    else:
        if download and root:
            from torchvision.datasets import FashionMNIST

            FashionMNIST(root, train=split == "train", download=True)
            return load_fashion_mnist(root, split, download=False)
        raise DatasetError(
            f"Fashion-MNIST {split} files ({image_stem}[.gz], {label_stem}[.gz]) not found in "
            f"{', '.join(map(str, folders))}. Install them with `apt-get install dataset-fashion-mnist` "
            f"(files in {DEBIAN_DIR}), point data.root at a folder holding them, "
            "or set data.download=true when online.")
    x = _read_idx(images, 2051, 3)
    y = _read_idx(labels, 2049, 1)
    if len(x) != len(y):
        raise DatasetError(f"{images} has {len(x)} images but {labels} has {len(y)} labels")
    return torch.from_numpy(x.copy()), torch.from_numpy(y.astype(np.int64))

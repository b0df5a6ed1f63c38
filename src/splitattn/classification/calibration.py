"""Calibration images for int8 quantization (``splitattn quantize`` and ``splitattn export --int8``): a seeded
random sample, preprocessed exactly as the model sees images at evaluation (the predictor's transform, or
Fashion-MNIST's normalisation)."""

from __future__ import annotations

from pathlib import Path

import torch

from .inference import Predictor


def _sample(count: int, total: int, seed: int) -> list[int]:
    """``count`` random indices of ``total``, the same for the same seed: a subset drawn from every class of a
    sorted folder tree, where the first ``count`` files would be a few classes only."""
    return torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:count].tolist()


def _stack(predictor: Predictor, paths: list[Path]) -> torch.Tensor:
    from ..data.images import open_image

    return torch.stack([predictor.transform(open_image(p)) for p in paths])


def calibration_images(predictor: Predictor, folder: str | None, count: int, seed: int = 0) -> tuple[torch.Tensor, str]:
    """Up to ``count`` calibration images as one (N, C, H, W) tensor, and a line saying where they came from.

    From ``folder`` (image files found recursively), else the training split of the dataset a training
    checkpoint names (Fashion-MNIST, or DATA_ROOT/train), else the few photos shipped with splitattn, with a line
    saying that they are too few for a real calibration."""
    from ..data.images import DatasetError
    from .fashion_mnist import load_fashion_mnist
    from .folder import IMG_EXTENSIONS

    if folder:
        root = Path(folder)
        if not root.is_dir():
            raise DatasetError(f"--calibration {root}: not a folder of images")
        files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMG_EXTENSIONS and p.is_file())
        if not files:
            raise DatasetError(f"--calibration {root}: no image files ({', '.join(IMG_EXTENSIONS)}) in it")
        chosen = [files[i] for i in _sample(count, len(files), seed)]
        return _stack(predictor, chosen), f"{len(chosen)} random images of the {len(files)} under {root}"
    data_cfg = predictor.meta.get("config", {}).get("data", {})
    if data_cfg.get("dataset") == "fashion_mnist":
        images, _ = load_fashion_mnist(data_cfg.get("root") or None, "train")
        index = _sample(count, len(images), seed)
        mean = torch.tensor(predictor.meta.get("mean", [0.286])).view(1, -1, 1, 1)
        std = torch.tensor(predictor.meta.get("std", [0.353])).view(1, -1, 1, 1)
        return ((images[index].unsqueeze(1).float() / 255 - mean) / std,
                f"{len(index)} random Fashion-MNIST train images")
    if data_cfg.get("root") and (Path(data_cfg["root"]) / "train").is_dir():
        return calibration_images(predictor, str(Path(data_cfg["root"]) / "train"), count, seed)
    from ..data.sample_photos import sample_photos

    photos = [photo.path for photo in sample_photos()][:count]
    return (_stack(predictor, photos),
            f"the {len(photos)} photos shipped with splitattn (too few for a real calibration: pass --calibration DIR "
            "with a few hundred training images)")

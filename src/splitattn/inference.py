"""Rebuild a model with its preprocessing for ``eval`` and ``predict``: from a training checkpoint
(which records model, classes and normalisation) or from a zoo name with released / given weights."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torch import nn
from torchvision import transforms

from .data.train_transforms import small_image_eval_transform
from .data.transforms import ToMode, create_transform
from .engine.checkpoint import load_checkpoint
from .models.factory import create_model
from .models.weights import CheckpointError, load_weights, read_checkpoint_file


@dataclass
class Predictor:
    model: nn.Module
    transform: transforms.Compose
    classes: list[str]
    source: str
    meta: dict

    @torch.no_grad()
    def topk(self, image: Image.Image, k: int = 5) -> list[tuple[str, float, int]]:
        """``(class name, probability, index)`` for the ``k`` most likely classes of one image."""
        probs = self.model(self.transform(image).unsqueeze(0)).softmax(-1)[0]
        values, indices = probs.topk(min(k, len(probs)))
        return [(self.classes[i], float(p), int(i)) for p, i in zip(values, indices)]


def imagenet_categories() -> list[str]:
    """The 1000 ImageNet-1k class names, from torchvision's bundled metadata (no download)."""
    from torchvision.models import ResNet50_Weights

    return list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


def default_classes(num_classes: int) -> list[str]:
    return imagenet_categories() if num_classes == 1000 else [f"class {i}" for i in range(num_classes)]


def _is_training_checkpoint(path: Path) -> bool:
    obj = read_checkpoint_file(path)
    return isinstance(obj, dict) and "model_name" in obj and "model_kwargs" in obj


def checkpoint_transform(ckpt: dict) -> transforms.Compose:
    """The eval preprocessing a training checkpoint was validated with."""
    size = int(ckpt["image_size"])
    if ckpt.get("train_transform") == "small" or ckpt.get("dataset") == "fashion_mnist":
        if int(ckpt["model_kwargs"].get("in_chans", 3)) == 1:
            return transforms.Compose([ToMode("L"), transforms.Resize((size, size)), transforms.ToTensor(),
                                       transforms.Normalize(ckpt["mean"], ckpt["std"])])
        return small_image_eval_transform(size, ckpt["mean"], ckpt["std"])
    return create_transform(ckpt["model_name"], crop=size)


def load_predictor(checkpoint: str | None = None, model_name: str | None = None,
                   pretrained: bool = False) -> Predictor:
    """From ``checkpoint`` (a training checkpoint, or a state_dict for ``model_name``) or ``model_name``."""
    if checkpoint and _is_training_checkpoint(Path(checkpoint)):
        ckpt = load_checkpoint(checkpoint)
        model = create_model(ckpt["model_name"], **ckpt["model_kwargs"])
        model.load_state_dict(ckpt["model"])
        return Predictor(model.eval(), checkpoint_transform(ckpt), list(ckpt["classes"]), checkpoint, ckpt)
    if not model_name:
        raise CheckpointError("a plain state_dict does not say which network it is: pass --model NAME with it")
    model = create_model(model_name, pretrained=pretrained)
    if checkpoint:
        load_weights(model, checkpoint, head=True)
    source = checkpoint or (f"{model_name} (released weights)" if pretrained else f"{model_name} (random weights)")
    return Predictor(model.eval(), create_transform(model_name), default_classes(model.num_classes), source, {})


def eval_batches(predictor: Predictor, dataset: str | None, root: str | None, split: str, batch: int, workers: int):
    """Validation batches with the predictor's own preprocessing: an image folder or Fashion-MNIST."""
    from .data.fashion_mnist import load_fashion_mnist
    from .data.folder import DatasetError, ImageFolderDataset
    from .data.loaders import FolderEvalBatches, TensorEvalBatches

    data_cfg = predictor.meta.get("config", {}).get("data", {})
    dataset = dataset or data_cfg.get("dataset") or "imagefolder"
    root = root if root is not None else data_cfg.get("root", "")
    if dataset == "fashion_mnist":
        images, labels = load_fashion_mnist(root or None, "test" if split in ("val", "test") else split)
        mean, std = predictor.meta.get("mean", [0.286]), predictor.meta.get("std", [0.353])
        return TensorEvalBatches(images.unsqueeze(1), labels, batch, 0, 1, mean, std)
    if not root:
        raise DatasetError("no data folder: pass --data ROOT (with ROOT/val/CLASS/*.jpg)")
    folder = ImageFolderDataset(Path(root) / split, predictor.transform)
    if len(folder.classes) != len(predictor.classes):
        raise DatasetError(f"{Path(root) / split} has {len(folder.classes)} class folders but the model predicts "
                           f"{len(predictor.classes)} classes")
    return FolderEvalBatches(folder, batch, 0, 1, workers)

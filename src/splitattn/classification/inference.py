"""Rebuild a classifier with its preprocessing for ``eval`` and ``predict``: from a training checkpoint (which
records model, classes and normalisation) or from a zoo name with released / given weights."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torch import nn
from torchvision import transforms

from ..data.transforms import ToMode, create_transform
from ..engine.checkpoint import check_training_checkpoint, checkpoint_task, checkpoint_weights
from ..models.factory import create_model
from ..models.weights import CheckpointError, load_weights, read_checkpoint_file
from .transforms import small_image_eval_transform


@dataclass
class Predictor:
    model: nn.Module
    transform: transforms.Compose
    classes: list[str]
    source: str
    meta: dict  # a training checkpoint's meta and config; {} for zoo models
    device: torch.device = torch.device("cpu")

    @torch.no_grad()
    def topk(self, image: Image.Image, k: int = 5) -> list[tuple[str, float, int]]:
        """``(class name, probability, index)`` for the ``k`` most likely classes of one image."""
        probs = self.model(self.transform(image).unsqueeze(0).to(self.device)).softmax(-1)[0].cpu()
        values, indices = probs.topk(min(k, len(probs)))
        return [(self.classes[i], float(p), int(i)) for p, i in zip(values, indices)]


def imagenet_categories() -> list[str]:
    """The 1000 ImageNet-1k class names, from torchvision's bundled metadata (no download)."""
    from torchvision.models import ResNet50_Weights

    return list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


def default_classes(num_classes: int) -> list[str]:
    return imagenet_categories() if num_classes == 1000 else [f"class {i}" for i in range(num_classes)]


def checkpoint_transform(meta: dict) -> transforms.Compose:
    """The eval preprocessing a training checkpoint was validated with."""
    size = int(meta["image_size"])
    if meta.get("train_transform") == "small" or meta.get("dataset") == "fashion_mnist":
        if int(meta["model_kwargs"].get("in_chans", 3)) == 1:
            return transforms.Compose([ToMode("L"), transforms.Resize((size, size)), transforms.ToTensor(),
                                       transforms.Normalize(meta["mean"], meta["std"])])
        return small_image_eval_transform(size, meta["mean"], meta["std"])
    return create_transform(meta["model_name"], crop=size)


def load_predictor(checkpoint: str | None = None, model_name: str | None = None, pretrained: bool = False,
                   verb: str = "predict", device: torch.device | str = "cpu", weights: str = "model") -> Predictor:
    """From ``checkpoint`` (a classification training checkpoint, or a state_dict for ``model_name``) or
    ``model_name`` (random or released weights). A checkpoint of another task is a CheckpointError naming
    the command that reads it. ``weights="ema"``: a training checkpoint's EMA weights instead of the model's."""
    device = torch.device(device)
    obj = read_checkpoint_file(checkpoint) if checkpoint else None
    if obj is not None and checkpoint_task(obj) is not None:
        ckpt = check_training_checkpoint(obj, checkpoint, "classification", verb)
        meta = ckpt["meta"]
        model = create_model(meta["model_name"], **meta["model_kwargs"])
        model.load_state_dict(checkpoint_weights(ckpt, weights, checkpoint))
        source = f"{checkpoint} (EMA weights)" if weights == "ema" else checkpoint
        return Predictor(model.eval().to(device), checkpoint_transform(meta), list(meta["classes"]), source,
                         {**meta, "config": ckpt["config"]}, device)
    if weights == "ema":
        raise CheckpointError("--weights ema needs a training checkpoint that kept an EMA (a run with "
                              "engine.ema_decay > 0): drop --weights ema for zoo models and plain state_dicts")
    if not model_name:
        raise CheckpointError(f"{checkpoint} is a plain state_dict, which does not say which network it is: pass "
                              "--model NAME with it" if checkpoint else "pass --checkpoint FILE or --model NAME")
    model = create_model(model_name, pretrained=pretrained)
    if obj is not None:
        load_weights(model, obj, head=True)
    source = checkpoint or (f"{model_name} (released weights)" if pretrained else f"{model_name} (random weights)")
    return Predictor(model.eval().to(device), create_transform(model_name), default_classes(model.num_classes),
                     source, {}, device)


def eval_batches(predictor: Predictor, dataset: str | None, root: str | None, split: str, batch: int, workers: int):
    """Validation batches with the predictor's own preprocessing: an image folder or Fashion-MNIST."""
    from .data import FolderEvalBatches, TensorEvalBatches
    from .fashion_mnist import load_fashion_mnist
    from .folder import DatasetError, ImageFolderDataset

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

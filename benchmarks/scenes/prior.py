"""RetinaNet's prior initialisation (Lin et al. 2017) for per-pixel classes, which the scenes segmentation
preset used: every classifier starts at the training labels' class frequencies, so a short run does not spend
its first hundreds of iterations learning that most pixels are background."""

from __future__ import annotations

import torch
from torch import nn

from splitattn.segmentation.models import DeepLabV3PlusHead, Segmenter


def class_frequencies(dataset, max_images: int = 500) -> torch.Tensor:
    """Labelled-pixel share of each class over up to ``max_images`` evenly spaced training labels (each
    count + 1, so an unseen class keeps a finite prior)."""
    step = max(1, len(dataset) // max_images)
    counts = torch.ones(dataset.num_classes, dtype=torch.float64)
    for index in range(0, len(dataset), step):
        label = torch.from_numpy(dataset.load_label(index))
        label = label[label != dataset.ignore_index]
        counts += torch.bincount(label.reshape(-1), minlength=dataset.num_classes).double()
    return (counts / counts.sum()).float()


def _classifier(head: nn.Module) -> nn.Conv2d:
    return head.classifier if isinstance(head, DeepLabV3PlusHead) else head[-1]


@torch.no_grad()
def init_class_prior(model: Segmenter, frequencies: torch.Tensor) -> None:
    """Start every classifier of ``model`` at the class prior: weights ~ N(0, 0.01), bias = log(frequency)."""
    frequencies = torch.as_tensor(frequencies, dtype=torch.float32)
    if frequencies.shape != (model.num_classes,) or not bool((frequencies > 0).all()):
        raise ValueError(f"need {model.num_classes} positive class frequencies, got {tuple(frequencies.shape)}")
    for head in (model.head, model.aux_head):
        if head is not None:
            classifier = _classifier(head)
            nn.init.normal_(classifier.weight, std=0.01)
            classifier.bias.copy_((frequencies / frequencies.sum()).log())

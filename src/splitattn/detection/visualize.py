"""Prediction overlays (boxes, masks, labels, scores): single images with torchvision's drawing utilities,
a grid of them as one PNG with matplotlib (``pip install 'splitattn[plots]'``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

from ..engine.plots import pyplot

_PALETTE = ["#e6194b", "#3cb44b", "#ffe119", "#4363d8", "#f58231", "#911eb4", "#46f0f0", "#f032e6",
            "#bcf60c", "#fabebe", "#008080", "#e6beff", "#9a6324", "#800000", "#aaffc3", "#808000"]


def draw_detections(image: torch.Tensor, prediction: dict[str, torch.Tensor], class_names: Sequence[str],
                    score_thresh: float = 0.5, mask_thresh: float = 0.5) -> torch.Tensor:
    """uint8 CHW picture: ``image`` (float [0,1] or uint8) with the predictions above ``score_thresh``."""
    picture = image if image.dtype == torch.uint8 else (image.clamp(0, 1) * 255).round().to(torch.uint8)
    picture = picture.cpu()
    keep = prediction["scores"].cpu() >= score_thresh
    labels = prediction["labels"].cpu()[keep].tolist()
    colors = [_PALETTE[label % len(_PALETTE)] for label in labels]
    if "masks" in prediction and keep.any():
        masks = prediction["masks"].cpu()[keep][:, 0] > mask_thresh
        picture = draw_segmentation_masks(picture, masks, alpha=0.45, colors=colors)
    if keep.any():
        names = [class_names[label - 1] if 0 < label <= len(class_names) else str(label) for label in labels]
        texts = [f"{n} {s:.2f}" for n, s in zip(names, prediction["scores"].cpu()[keep].tolist())]
        picture = draw_bounding_boxes(picture, prediction["boxes"].cpu()[keep].float(), texts, colors=colors, width=2)
    return picture


@torch.no_grad()
def predict_images(model: nn.Module, images: Sequence[torch.Tensor], device: torch.device | str = "cpu"):
    model.eval()
    return [{k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in out.items()}  # Panoptic FPN: segments
            for out in model([img.to(device) for img in images])]


def write_overlays(model: nn.Module, images: Sequence[torch.Tensor], class_names: Sequence[str], path: Path,
                   device: torch.device | str = "cpu", score_thresh: float = 0.5) -> Path:
    """One PNG with a grid of prediction overlays for ``images``."""
    plt = pyplot()
    predictions = predict_images(model, images, device)
    columns = min(4, len(images))
    rows = -(-len(images) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4 * columns, 4 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, prediction in zip(axes.flat, images, predictions):
        ax.imshow(draw_detections(image, prediction, class_names, score_thresh).permute(1, 2, 0).numpy())
        ax.set_title(f"{int((prediction['scores'] >= score_thresh).sum())} detections ≥ {score_thresh}", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path

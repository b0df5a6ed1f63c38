"""Colour overlays of semantic predictions (and the ground truth beside them; grids need matplotlib:
``pip install 'splitattn[plots]'``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..engine.plots import pyplot


def palette(num_classes: int) -> np.ndarray:
    """PASCAL VOC's bit-interleaved colour map (class 0 black), extended to any number of classes."""
    colours = np.zeros((max(num_classes, 256), 3), np.uint8)
    for index in range(len(colours)):
        value, r, g, b = index, 0, 0, 0
        for bit in range(8):
            r |= ((value >> 0) & 1) << (7 - bit)
            g |= ((value >> 1) & 1) << (7 - bit)
            b |= ((value >> 2) & 1) << (7 - bit)
            value >>= 3
        colours[index] = (r, g, b)
    return colours


def overlay(image: torch.Tensor, label: torch.Tensor, alpha: float = 0.55, ignore_index: int = 255) -> np.ndarray:
    """HWC uint8: ``image`` (float [0,1] CHW) blended with the colours of ``label`` (HW); ignore stays clear."""
    rgb = (image.clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).astype(np.float32)
    label = label.cpu().numpy()
    colours = palette(int(label[label != ignore_index].max(initial=0)) + 1)[np.where(label == ignore_index, 0, label)]
    blend = np.where((label != ignore_index)[..., None], (1 - alpha) * rgb + alpha * colours, rgb)
    return blend.round().astype(np.uint8)


@torch.no_grad()
def predict_labels(model: nn.Module, image: torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
    model.eval()
    return model(image[None].to(device))["out"][0].argmax(0).cpu()


def write_segmentation_overlays(model: nn.Module, samples: Sequence[tuple[torch.Tensor, torch.Tensor]], path: Path,
                                device: torch.device | str = "cpu") -> Path:
    """A PNG grid: per sample, the prediction overlay above the ground-truth overlay."""
    plt = pyplot()
    fig, axes = plt.subplots(2, len(samples), figsize=(3 * len(samples), 6), squeeze=False)
    for column, (image, label) in enumerate(samples):
        axes[0, column].imshow(overlay(image, predict_labels(model, image, device)))
        axes[1, column].imshow(overlay(image, label))
        axes[0, column].set_title("prediction", fontsize=9)
        axes[1, column].set_title("ground truth", fontsize=9)
    for ax in axes.flat:
        ax.axis("off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path

"""A grid of validation predictions as a PNG (matplotlib: ``pip install 'splitattn[plots]'``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from ..engine.plots import pyplot


def plot_predictions(images: torch.Tensor, labels: torch.Tensor, probs: torch.Tensor, classes: Sequence[str],
                     mean: Sequence[float], std: Sequence[float], path: Path, columns: int = 8) -> Path:
    """A grid of images titled 'predicted (p) / true', green when right and red when wrong."""
    plt = pyplot()
    images = images.float() * torch.tensor(std).view(1, -1, 1, 1) + torch.tensor(mean).view(1, -1, 1, 1)
    images = images.clamp(0, 1)
    rows = -(-len(images) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(columns * 1.7, rows * 1.9), squeeze=False)
    conf, pred = probs.max(dim=1)
    for ax in axes.flat:
        ax.axis("off")
    for i, ax in enumerate(axes.flat[: len(images)]):
        img = images[i].permute(1, 2, 0).numpy()
        ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray" if img.shape[-1] == 1 else None)
        right = int(pred[i]) == int(labels[i])
        ax.set_title(f"{classes[int(pred[i])][:12]} ({conf[i]:.0%})\n/ {classes[int(labels[i])][:12]}",
                     fontsize=7, color="green" if right else "red")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path

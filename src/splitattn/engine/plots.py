"""PNG pictures of a run: training curves and a grid of validation predictions."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from .logbook import read_jsonl  # noqa: E402


def plot_curves(out_dir: Path, path: Path | None = None) -> Path:
    """Loss and lr per step, validation top-1/top-5 per epoch, from the run's JSONL logs."""
    steps = read_jsonl(out_dir / "steps.jsonl", "step")
    epochs = read_jsonl(out_dir / "epochs.jsonl", "epoch")
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    if steps:
        axes[0].plot([s["step"] for s in steps], [s["loss"] for s in steps], lw=0.8, label="train, per step")
    if epochs:
        axes[0].plot([e["step"] for e in epochs], [e["train_loss"] for e in epochs], "o-", label="train, epoch mean")
        if any("val_loss" in e for e in epochs):
            axes[0].plot([e["step"] for e in epochs if "val_loss" in e],
                         [e["val_loss"] for e in epochs if "val_loss" in e], "s-", label="validation (plain CE)")
        for key in ("val_top1", "val_top5"):
            points = [(e["epoch"] + 1, e[key]) for e in epochs if key in e]
            if points:
                axes[1].plot(*zip(*points), "o-", label=key.replace("val_top", "top-"))
    if steps:
        axes[2].plot([s["step"] for s in steps], [s["lr"] for s in steps])
    axes[0].set(title="loss (training: with label smoothing / mixup)", xlabel="step")
    axes[1].set(title="validation accuracy (%)", xlabel="epoch")
    axes[2].set(title="learning rate", xlabel="step")
    for ax in axes[:2]:
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
        ax.grid(alpha=0.3)
    axes[2].grid(alpha=0.3)
    fig.tight_layout()
    path = path or out_dir / "curves.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_predictions(images: torch.Tensor, labels: torch.Tensor, probs: torch.Tensor, classes: Sequence[str],
                     mean: Sequence[float], std: Sequence[float], path: Path, columns: int = 8) -> Path:
    """A grid of images titled 'predicted (p) / true', green when right and red when wrong."""
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


def plot_iteration_curves(out_dir: Path, metrics: Sequence[str], path: Path | None = None) -> Path:
    """Iteration-based runs: each training loss term, the learning rate, and validation ``metrics``."""
    steps = read_jsonl(out_dir / "steps.jsonl", "step")
    evals = read_jsonl(out_dir / "epochs.jsonl", "epoch")
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    if steps:
        iterations = [s["step"] for s in steps]
        for key in [k for k in steps[-1] if k.startswith("loss")]:
            axes[0].plot(iterations, [s.get(key, float("nan")) for s in steps], lw=1.2 if key == "loss" else 0.7,
                         label=key)
        axes[1].plot(iterations, [s["lr"] for s in steps])
    for key in metrics:
        points = [(e["step"], e[key]) for e in evals if key in e]
        if points:
            axes[2].plot(*zip(*points), "o-", label=key)
    axes[0].set(title="training losses", xlabel="iteration", yscale="log")
    axes[1].set(title="learning rate", xlabel="iteration")
    axes[2].set(title="validation", xlabel="iteration")
    for ax in axes:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path = path or out_dir / "curves.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path

"""Training curves as a PNG, from a run's JSONL logs (matplotlib: ``pip install 'splitattn[plots]'``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..optional import require
from .logbook import read_jsonl


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend, or a MissingDependency naming the extra."""
    matplotlib = require("matplotlib", "writing PNG pictures")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(out_dir: Path, metrics: Sequence[str], path: Path | None = None) -> Path:
    """Three panels over the steps: every training loss term (and the validation loss when logged), the
    validation ``metrics``, and the learning rate."""
    plt = pyplot()
    steps, evals = read_jsonl(out_dir / "steps.jsonl"), read_jsonl(out_dir / "evals.jsonl")
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    if steps:
        x = [s["step"] for s in steps]
        for key in [k for k in steps[-1] if k.startswith("loss")]:
            axes[0].plot(x, [s.get(key, float("nan")) for s in steps], lw=1.2 if key == "loss" else 0.7, label=key)
        axes[2].plot(x, [s["lr"] for s in steps])
    if any("val_loss" in e for e in evals):
        axes[0].plot(*zip(*[(e["step"], e["val_loss"]) for e in evals if "val_loss" in e]), "s-", label="val_loss")
    for key in metrics:
        points = [(e["step"], e[key]) for e in evals if key in e]
        if points:
            axes[1].plot(*zip(*points), "o-", label=key)
    axes[0].set(title="loss (training: as optimised, e.g. with label smoothing)", xlabel="step")
    axes[1].set(title="validation", xlabel="step")
    axes[2].set(title="learning rate", xlabel="step")
    for ax in axes:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path = path or out_dir / "curves.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path

"""Training and evaluation: recipe pieces, the loop, checkpoints, logs and pictures."""

from .trainer import RunSummary, Trainer, TrainingError, train

__all__ = ["RunSummary", "Trainer", "TrainingError", "train"]

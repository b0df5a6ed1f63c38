"""Segmenter training on the engine: poly learning rate, heads at 10×, pixAcc / mIoU.

Weight decay applies to every parameter, as PyTorch-Encoding's recipe (its optimizer has one decay
for all groups). Periodic evaluations are single-scale (``mIoU``, ``pixAcc``, …; best.pth keeps the best of
them); the final one uses ``eval.scales`` + flip when ``eval.final_scales`` is set (the paper's protocol),
and its figures are named for it (``mIoU_ms_flip``, …) so that the two protocols are never compared.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..engine.checkpoint import checkpoint_weights, read_training_checkpoint
from ..engine.distributed import DistInfo, shutdown_distributed
from ..engine.loop import RunSummary, Task, Trainer
from ..engine.sampler import iteration_batches
from ..models import set_grad_checkpointing
from .config import SegmentConfig, segment_config_from_dict
from .data import build_segmentation_data
from .evaluate import evaluate_segmenter
from .losses import segmentation_loss
from .models import create_segmenter


def poly_learning_rate(iteration: int, base_lr: float, max_iters: int, power: float, warmup_iters: int = 0) -> float:
    """Encoding's LR_Scheduler 'poly': base·(1 − i/N)^power, after an optional linear warm-up."""
    if iteration < warmup_iters:
        return base_lr * (iteration + 1) / warmup_iters
    return base_lr * (1 - iteration / max_iters) ** power


def load_segmenter_checkpoint(path: str | Path, map_location: str | torch.device = "cpu", verb: str = "eval",
                              weights: str = "model"):
    """(model in eval mode, checkpoint dict) from a ``splitattn segment train`` checkpoint; ``weights="ema"``: its
    EMA weights."""
    ckpt = read_training_checkpoint(path, "segmentation", verb)
    cfg = segment_config_from_dict(ckpt["config"])
    cfg.model.pretrained_backbone = False
    model = create_segmenter(**cfg.model.segmenter_kwargs(ckpt["meta"]["num_classes"], progress=False))
    model.load_state_dict(checkpoint_weights(ckpt, weights, path))
    return model.to(map_location).eval(), ckpt


def _collate(batch):
    images, labels = zip(*batch)
    return torch.stack(images), torch.stack(labels)


class SegmentationTask(Task):
    name = "segmentation"
    metrics = ("mIoU", "pixAcc", "mIoU_ms_flip")
    best_metric = "mIoU"

    def setup(self, trainer: Trainer) -> None:
        self.trainer = trainer
        self.train_set, self.val_set = build_segmentation_data(self.cfg.data)

    def build_model(self) -> nn.Module:
        model = create_segmenter(**self.cfg.model.segmenter_kwargs(self.train_set.num_classes,
                                                                  progress=self.trainer.dist.is_main))
        set_grad_checkpointing(model, self.cfg.model.grad_checkpointing)
        return model

    def param_groups(self, model: nn.Module) -> list[dict]:
        backbone = [p for p in model.backbone.parameters() if p.requires_grad]
        heads = [p for name, p in model.named_parameters() if not name.startswith("backbone.") and p.requires_grad]
        o = self.cfg.optim
        return [{"params": backbone, "lr_mult": 1.0, "weight_decay": o.weight_decay},
                {"params": heads, "lr_mult": o.head_lr_mult, "weight_decay": o.weight_decay}]

    def total_steps(self) -> int:
        return self.cfg.total_iters(len(self.train_set))

    def learning_rate(self, step: int) -> float:
        o = self.cfg.optim
        return poly_learning_rate(step, o.lr, self.total_steps(), o.poly_power, o.warmup_iters)

    def batches(self, start_step: int) -> Iterator[Any]:
        t, cfg = self.trainer, self.cfg
        return iteration_batches(self.train_set, _collate, start_step, self.total_steps(), cfg.optim.batch_size,
                                 cfg.engine.seed, t.dist.rank, t.dist.world, cfg.data.workers)

    def losses(self, model: nn.Module, batch: Any) -> dict[str, torch.Tensor]:
        images, labels = batch
        return {"loss_seg": segmentation_loss(model(images), labels, self.train_set.ignore_index,
                                              self.cfg.model.aux_weight)}

    def evaluate(self, model: nn.Module, step: int, final: bool) -> dict[str, float]:
        cfg, t = self.cfg, self.trainer
        final = final and cfg.eval.final_scales
        metrics = evaluate_segmenter(model, self.val_set, t.device, scales=tuple(cfg.eval.scales) if final else (1.0,),
                                     flip=cfg.eval.flip and final, crop_size=cfg.eval.window(cfg.data),
                                     base_size=cfg.data.base_size, amp=cfg.engine.amp, rank=t.dist.rank,
                                     world=t.dist.world, progress=cfg.engine.progress)
        if not final:
            return metrics
        return {(f"{k}_ms_flip" if "/" not in k else k.replace("/", "_ms_flip/", 1)): v for k, v in metrics.items()}

    def meta(self) -> dict[str, Any]:
        return {"kind": self.cfg.model.kind, "backbone": self.cfg.model.backbone,
                "num_classes": self.train_set.num_classes, "class_names": list(self.train_set.class_names or []),
                "ignore_index": self.train_set.ignore_index}

    def describe(self) -> str:
        return (f"{self.cfg.model.kind} on {self.cfg.model.backbone}, {self.train_set.num_classes} classes, "
                f"{len(self.train_set)} training images")

    def finish(self, model: nn.Module, out_dir: Path, metrics: dict[str, Any]) -> dict[str, str]:
        if not len(self.val_set):
            return {}
        from .visualize import write_segmentation_overlays

        samples = [self.val_set[i] for i in range(min(6, len(self.val_set)))]
        return {"predictions": str(write_segmentation_overlays(model.eval(), samples, out_dir / "predictions.png",
                                                               self.trainer.device))}


def train_segmenter(cfg: SegmentConfig, dist_info: DistInfo | None = None) -> RunSummary:
    """Train as ``cfg`` says; returns what happened (the main process has the file paths)."""
    try:
        return Trainer(SegmentationTask(cfg), dist_info).train()
    finally:
        shutdown_distributed()

"""Segmenter training on the shared iteration loop: poly learning rate, heads at 10×, pixAcc / mIoU.

Weight decay applies to every parameter, as PyTorch-Encoding's recipe (its optimizer has one decay
for all groups). Periodic evaluations are single-scale; the final one uses ``eval.scales`` + flip
when ``eval.final_scales`` is set (the paper's protocol).
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..engine.distributed import DistInfo
from ..engine.iteration_trainer import IterationSummary, IterationTrainer, read_task_checkpoint, train_with
from ..engine.plots import plot_iteration_curves
from ..engine.trainer import unwrap
from .config import SegmentConfig, segment_config_from_dict
from .data import build_segmentation_data
from .evaluate import evaluate_segmenter
from .losses import segmentation_loss
from .models import create_segmenter
from .visualize import write_segmentation_overlays


def poly_learning_rate(iteration: int, base_lr: float, max_iters: int, power: float, warmup_iters: int = 0) -> float:
    """Encoding's LR_Scheduler 'poly': base·(1 − i/N)^power, after an optional linear warm-up."""
    if iteration < warmup_iters:
        return base_lr * (iteration + 1) / warmup_iters
    return base_lr * (1 - iteration / max_iters) ** power


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


def load_segmenter_checkpoint(path: str | Path, map_location: str | torch.device = "cpu"):
    """(model in eval mode, checkpoint dict) from a ``splitattn segment train`` checkpoint."""
    ckpt = read_task_checkpoint(path, "segmenter", "splitattn segment train")
    cfg = segment_config_from_dict(ckpt["config"])
    cfg.model.pretrained_backbone = False
    model = create_segmenter(**cfg.model.segmenter_kwargs(ckpt["segmenter"]["num_classes"], progress=False))
    model.load_state_dict(ckpt["model"])
    return model.to(map_location).eval(), ckpt


class SegmentTrainer(IterationTrainer):
    task = "segmenter"
    command = "splitattn segment train"

    def __init__(self, cfg: SegmentConfig, dist_info: DistInfo | None = None):
        super().__init__(cfg, dist_info)

    def build(self):
        cfg = self.cfg
        train_set, self.val_set = build_segmentation_data(cfg.data)
        self.num_classes, self.class_names = train_set.num_classes, list(train_set.class_names or [])
        self.ignore_index = train_set.ignore_index
        cfg.optim.max_iters = cfg.total_iters(len(train_set))
        model = create_segmenter(**cfg.model.segmenter_kwargs(self.num_classes, progress=self.dist.is_main))
        if cfg.model.class_prior_init:  # every process computes the same prior: no broadcast needed
            model.init_class_prior(class_frequencies(train_set))
        backbone = [p for p in model.backbone.parameters() if p.requires_grad]
        heads = [p for name, p in model.named_parameters() if not name.startswith("backbone.") and p.requires_grad]
        wd = cfg.optim.weight_decay
        groups = [{"params": backbone, "lr_mult": 1.0, "weight_decay": wd},
                  {"params": heads, "lr_mult": cfg.optim.head_lr_mult, "weight_decay": wd}]
        return train_set, model, groups

    def wrap_model(self, model):
        # one graph: training crops have a fixed size; evaluation and checkpoints use the plain module
        return torch.compile(model) if self.cfg.engine.compile else model

    def collate(self, batch):
        images, labels = zip(*batch)
        return torch.stack(images), torch.stack(labels)

    def learning_rate(self, iteration: int) -> float:
        o = self.cfg.optim
        return poly_learning_rate(iteration, o.lr, o.max_iters, o.poly_power, o.warmup_iters)

    def time_budget_s(self) -> float:
        return 60.0 * self.cfg.optim.time_budget_min

    def losses(self, batch) -> dict[str, torch.Tensor]:
        images, labels = batch
        outputs = self.model(images)
        m = self.cfg.model
        return {"loss_seg": segmentation_loss(outputs, labels, self.ignore_index, m.aux_weight, m.lovasz_weight,
                                              m.lovasz_stride)}

    def describe(self) -> str:
        return f"{super().describe()}, {self.num_classes} classes, {self.cfg.optim.max_iters} iterations"

    def checkpoint_meta(self) -> dict:
        return {"kind": self.cfg.model.kind, "num_classes": self.num_classes, "class_names": self.class_names,
                "ignore_index": self.ignore_index}

    def evaluate(self, iteration: int) -> dict[str, float]:
        if self.val_set is None:
            return {}
        final = iteration >= self.cfg.optim.max_iters and self.cfg.eval.final_scales
        scales = tuple(self.cfg.eval.scales) if final else (1.0,)
        flip = self.cfg.eval.flip and final
        return evaluate_segmenter(unwrap(self.model), self.val_set, self.device, scales=scales, flip=flip,
                                  crop_size=self.cfg.eval.window(self.cfg.data), base_size=self.cfg.data.base_size,
                                  amp=self.cfg.engine.amp, rank=self.dist.rank, world=self.dist.world,
                                  progress=self.cfg.engine.progress, refine=self.cfg.eval.refiner() if final else None)

    def artifacts(self) -> dict[str, str]:
        files = {"curves": str(plot_iteration_curves(self.out_dir, ("mIoU", "pixAcc")))}
        if self.val_set is not None and len(self.val_set):
            samples = [self.val_set[i] for i in range(min(6, len(self.val_set)))]
            files["predictions"] = str(write_segmentation_overlays(
                unwrap(self.model).eval(), samples, self.out_dir / "predictions.png", self.device))
        return files


def train_segmenter(cfg: SegmentConfig, summary_json: str | Path | None = None) -> IterationSummary:
    return train_with(SegmentTrainer, cfg, summary_json)

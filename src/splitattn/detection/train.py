"""Detector training on the shared iteration loop (detectron2's schedule: warm-up + multi-step).

The end of the run evaluates with pycocotools and writes curves and prediction overlays.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..engine.distributed import DistInfo
from ..engine.iteration_trainer import IterationSummary, IterationTrainer, read_task_checkpoint, train_with
from ..engine.plots import plot_iteration_curves
from ..engine.recipe import parameter_groups
from ..engine.trainer import unwrap
from .config import DetectConfig, detect_config_from_dict
from .evaluate import evaluate_detector
from .factory import create_detector
from .visualize import write_overlays

DetectSummary = IterationSummary


def learning_rate(iteration: int, base_lr: float, steps: list[int], gamma: float, warmup_iters: int,
                  warmup_factor: float) -> float:
    """detectron2's WarmupMultiStepLR: linear warm-up from ``warmup_factor``·lr, ×gamma at each step."""
    decay = gamma ** sum(iteration >= s for s in steps)
    if iteration < warmup_iters:
        alpha = iteration / warmup_iters
        return base_lr * decay * (warmup_factor * (1 - alpha) + alpha)
    return base_lr * decay


def load_detector_checkpoint(path: str | Path, map_location: str | torch.device = "cpu"):
    """(model in eval mode, checkpoint dict) from a ``splitattn detect train`` checkpoint."""
    ckpt = read_task_checkpoint(path, "detector", "splitattn detect train")
    cfg = detect_config_from_dict(ckpt["config"])
    cfg.model.pretrained_backbone = False  # the checkpoint has every weight
    model = create_detector(**cfg.model.detector_kwargs(ckpt["detector"]["num_classes"], progress=False))
    model.load_state_dict(ckpt["model"])
    return model.to(map_location).eval(), ckpt


class DetectTrainer(IterationTrainer):
    task = "detector"
    command = "splitattn detect train"

    def __init__(self, cfg: DetectConfig, dist_info: DistInfo | None = None):
        super().__init__(cfg, dist_info)

    def build(self):
        from ..data.coco import CocoDetection

        cfg, d = self.cfg, self.cfg.data
        masks = cfg.model.kind.endswith("mask_rcnn")
        train_set = CocoDetection(d.train_images, d.train_annotations, train=True, masks=masks,
                                  flip_prob=d.flip_prob, strict=d.strict)
        self.val_set = None
        if d.val_annotations and Path(d.val_annotations).is_file():
            self.val_set = CocoDetection(d.val_images, d.val_annotations, train=False, masks=masks, strict=d.strict)
        self.num_classes = len(train_set.class_names) + 1
        self.class_names = list(train_set.class_names)
        self.label_to_cat_id = {int(k): int(v) for k, v in train_set.label_to_cat_id.items()}
        model = create_detector(**cfg.model.detector_kwargs(self.num_classes, progress=self.dist.is_main))
        return train_set, model, parameter_groups(model, cfg.optim.weight_decay)

    def collate(self, batch):
        from ..data.coco import collate_detection

        return collate_detection(batch)

    def learning_rate(self, iteration: int) -> float:
        o = self.cfg.optim
        return learning_rate(iteration, o.lr, o.steps, o.gamma, o.warmup_iters, o.warmup_factor)

    def losses(self, batch) -> dict[str, torch.Tensor]:
        images, targets = batch
        return self.model(images, targets)

    def describe(self) -> str:
        return f"{super().describe()}, {self.num_classes - 1} classes"

    def checkpoint_meta(self) -> dict:
        return {"kind": self.cfg.model.kind, "num_classes": self.num_classes, "class_names": self.class_names,
                "label_to_cat_id": self.label_to_cat_id}

    def evaluate(self, iteration: int) -> dict[str, float]:
        if self.val_set is None:
            return {}
        e = self.cfg.engine
        return evaluate_detector(unwrap(self.model), self.val_set, self.device, e.amp, e.eval_batch_size,
                                 self.dist.rank, self.dist.world, progress=e.progress)

    def artifacts(self) -> dict[str, str]:
        files = {"curves": str(plot_iteration_curves(self.out_dir, ("bbox_AP", "bbox_AP50", "segm_AP")))}
        if self.val_set is not None and len(self.val_set):
            model = unwrap(self.model).eval()
            samples = [self.val_set[i][0] for i in range(min(8, len(self.val_set)))]
            files["predictions"] = str(write_overlays(model, samples, self.class_names,
                                                      self.out_dir / "predictions.png", self.device))
        return files


def train_detector(cfg: DetectConfig, summary_json: str | Path | None = None) -> IterationSummary:
    return train_with(DetectTrainer, cfg, summary_json)



__all__ = ["DetectSummary", "DetectTrainer", "learning_rate", "load_detector_checkpoint", "train_detector"]

"""Detector training on the engine: detectron2's schedule (linear warm-up, ×γ at each step), COCO AP.

The validation annotations are read with the training checks when training starts (their problems are
reported then, not when the last evaluation crashes); the end of the run writes prediction overlays.
With ``optim.precise_bn_iters`` > 0, every evaluation (and so the end of the run, and the checkpoint written
after it) is preceded by precise BN, as detectron2's ``PreciseBN`` hook does (:meth:`DetectionTask.precise_bn`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data.images import DatasetError
from ..engine.checkpoint import checkpoint_weights, read_training_checkpoint
from ..engine.distributed import DistInfo, shutdown_distributed
from ..engine.loop import RunSummary, Task, Trainer, autocast, split_batch, to_device
from ..engine.precise_bn import update_bn_stats
from ..engine.sampler import iteration_batches
from ..models import set_grad_checkpointing
from ..seeding import derive_seed
from .config import DetectConfig, detect_config_from_dict
from .data import CocoDetection, collate_detection
from .evaluate import evaluate_detector
from .factory import PANOPTIC, create_detector
from .panoptic_data import CocoPanoptic
from .panoptic_eval import evaluate_panoptic, panoptic_metrics


def learning_rate(iteration: int, base_lr: float, steps: list[int], gamma: float, warmup_iters: int,
                  warmup_factor: float) -> float:
    """detectron2's WarmupMultiStepLR: linear warm-up from ``warmup_factor``·lr, ×gamma at each step."""
    decay = gamma ** sum(iteration >= s for s in steps)
    if iteration < warmup_iters:
        alpha = iteration / warmup_iters
        return base_lr * decay * (warmup_factor * (1 - alpha) + alpha)
    return base_lr * decay


def load_detector_checkpoint(path: str | Path, map_location: str | torch.device = "cpu", verb: str = "eval",
                             weights: str = "model"):
    """(model in eval mode, checkpoint dict) from a ``splitattn detect train`` checkpoint; ``weights="ema"``: its
    EMA weights."""
    ckpt = read_training_checkpoint(path, "detection", verb)
    cfg = detect_config_from_dict(ckpt["config"])
    cfg.model.pretrained_backbone = False  # the checkpoint has every weight
    model = create_detector(**cfg.model.detector_kwargs(ckpt["meta"]["num_classes"], progress=False,
                                                        sem_seg_classes=ckpt["meta"].get("sem_seg_classes")))
    model.load_state_dict(checkpoint_weights(ckpt, weights, path))
    return model.to(map_location).eval(), ckpt


class DetectionTask(Task):
    name = "detection"
    eval_batch_size = 4  # when engine.eval_batch_size is 0

    @property
    def panoptic(self) -> bool:
        return self.cfg.model.kind in PANOPTIC

    @property
    def metrics(self) -> tuple[str, ...]:  # type: ignore[override]
        return ("PQ", "PQ_th", "PQ_st") if self.panoptic else ("bbox_AP", "bbox_AP50", "segm_AP")

    @property
    def best_metric(self) -> str:  # type: ignore[override]
        return "PQ" if self.panoptic else "bbox_AP"

    def setup(self, trainer: Trainer) -> None:
        self.trainer = trainer
        if self.panoptic:
            return self._setup_panoptic()
        d, masks = self.cfg.data, self.cfg.model.kind.endswith("mask_rcnn")
        self.train_set = CocoDetection(d.train_images, d.train_annotations, train=True, masks=masks,
                                       flip_prob=d.flip_prob, strict=d.strict)
        if len(self.train_set) == 0:
            raise DatasetError(f"{d.train_annotations} lists no images: check data.train_annotations")
        self.val_set = None
        if d.val_annotations:
            self.val_set = CocoDetection(d.val_images, d.val_annotations, train=False, masks=masks, strict=d.strict)
            if self.val_set.class_names != self.train_set.class_names:
                raise DatasetError(f"{d.val_annotations} has categories {self.val_set.class_names}, "
                                   f"{d.train_annotations} {self.train_set.class_names}: both need the same ones")
        if trainer.dist.is_main:
            for dataset in filter(None, (self.train_set, self.val_set)):
                print(dataset.problem_report(), flush=True)

    def _setup_panoptic(self) -> None:
        """COCO panoptic data (detectron2's "separated" targets built from the PNGs) for the Panoptic FPN kinds."""
        d = self.cfg.data
        self.train_set = CocoPanoptic(d.train_images, d.train_annotations, d.train_panoptic_dir, train=True,
                                      flip_prob=d.flip_prob, strict=d.strict)
        if len(self.train_set) == 0:
            raise DatasetError(f"{d.train_annotations} lists no images: check data.train_annotations")
        self.val_set = None
        if d.val_annotations:
            self.val_set = CocoPanoptic(d.val_images, d.val_annotations, d.val_panoptic_dir, strict=d.strict)
            if (self.val_set.thing_classes, self.val_set.stuff_classes) != (self.train_set.thing_classes,
                                                                            self.train_set.stuff_classes):
                raise DatasetError(f"{d.val_annotations} and {d.train_annotations} need the same thing and stuff "
                                   "categories")
        if self.trainer.dist.is_main:
            for dataset in filter(None, (self.train_set, self.val_set)):
                print(dataset.problem_report(), flush=True)

    def _sem_seg_classes(self) -> int | None:
        return self.train_set.num_stuff_classes if self.panoptic else None

    def build_model(self) -> nn.Module:
        model = create_detector(**self.cfg.model.detector_kwargs(self.train_set.num_classes,
                                                                progress=self.trainer.dist.is_main,
                                                                sem_seg_classes=self._sem_seg_classes()))
        set_grad_checkpointing(model, self.cfg.model.grad_checkpointing)
        return model

    def total_steps(self) -> int:
        return self.cfg.optim.max_iters

    def learning_rate(self, step: int) -> float:
        o = self.cfg.optim
        return learning_rate(step, o.lr, o.steps, o.gamma, o.warmup_iters, o.warmup_factor)

    def batches(self, start_step: int) -> Iterator[Any]:
        return self._train_batches(start_step, self.total_steps())

    def _train_batches(self, first: int, last: int) -> Iterator[Any]:
        """This process's training batches of steps ``first``..``last - 1`` (also past the schedule's end)."""
        t, cfg = self.trainer, self.cfg
        return iteration_batches(self.train_set, collate_detection, first, last, cfg.optim.batch_size,
                                 cfg.engine.seed, t.dist.rank, t.dist.world, cfg.data.workers)

    def losses(self, model: nn.Module, batch: Any) -> dict[str, torch.Tensor]:
        images, targets = batch
        return model(images, targets)

    def precise_bn(self, model: nn.Module, step: int) -> int:
        """Precise BN at ``step`` (steps done): every training-mode BN layer's running statistics become their
        true averages over ``optim.precise_bn_iters`` forward passes at the current weights (detectron2's
        ``PreciseBN`` hook, fvcore's arithmetic: :func:`~splitattn.engine.precise_bn.update_bn_stats`).

        The passes are the ones training runs next, without updates: this process's micro-batches of steps
        ``step``, ``step + 1``, … (the training order and flips), each forward seeded like that training
        forward (so the same proposal samples), in train mode, under the run's autocast. Every process calls
        it (SyncBN then pools the statistics over all of them). The global random state is left as it was.
        Returns the number of forward passes used (0: off, or no BN layer in training mode).
        """
        iters = self.cfg.optim.precise_bn_iters
        if iters == 0:
            return 0
        t, e, accum = self.trainer, self.cfg.engine, self.cfg.optim.accum_steps

        def micro_batches() -> Iterator[tuple[int, Any]]:
            steps = -(-iters // accum)  # ceil: the last step's micro-batches may be used in part
            for iteration, batch in enumerate(self._train_batches(step, step + steps), start=step):
                torch.manual_seed(derive_seed(e.seed, 1, t.dist.rank, iteration))  # as Trainer.run_step
                batch = self.prepare(to_device(batch, t.device, e.channels_last), iteration)
                for index, chunk in enumerate(split_batch(batch, accum)):
                    yield derive_seed(e.seed, 2, iteration, t.dist.rank * accum + index), chunk

        def forward(module: nn.Module, item: tuple[int, Any]) -> Any:
            seed, chunk = item
            torch.manual_seed(seed)
            with autocast(t.device, e.amp):
                return self.losses(module, chunk)

        model.train()
        devices = [t.device] if t.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            used = update_bn_stats(model, micro_batches(), iters, forward=forward,
                                   progress=e.progress and t.dist.is_main)
        if t.dist.is_main:
            if used:
                print(f"step {step}/{self.total_steps()}: precise BN statistics from {used} training batches "
                      f"of {t.micro_batch} images per process", flush=True)
            else:
                print(f"step {step}/{self.total_steps()}: precise BN skipped: the model has no BatchNorm layer "
                      f"in training mode (model.norm={self.cfg.model.norm})", flush=True)
        return used

    def evaluate(self, model: nn.Module, step: int, final: bool) -> dict[str, float]:
        # also without a validation set: the checkpoints written after an evaluation keep the statistics
        self.precise_bn(model, step)
        if self.val_set is None:
            return {}
        t, e = self.trainer, self.cfg.engine
        if self.panoptic:  # COCO panoptic files of this evaluation under the run (the EMA's apart), then PQ
            folder = f"step_{step}" + ("_ema" if t.evaluating == "ema" else "")
            results = evaluate_panoptic(model, self.val_set, Path(t.out_dir) / "panoptic_eval" / folder,
                                        t.device, e.eval_batch_size or self.eval_batch_size, e.amp,
                                        progress=e.progress, overwrite=True, rank=t.dist.rank, world=t.dist.world)
            return panoptic_metrics(results) if results else {}
        return evaluate_detector(model, self.val_set, t.device, e.amp, e.eval_batch_size or self.eval_batch_size,
                                 t.dist.rank, t.dist.world, progress=e.progress)

    def meta(self) -> dict[str, Any]:
        return {"kind": self.cfg.model.kind, "backbone": self.cfg.model.backbone,
                "num_classes": self.train_set.num_classes, "class_names": list(self.train_set.class_names),
                "label_to_cat_id": {int(k): int(v) for k, v in self.train_set.label_to_cat_id.items()},
                **({"sem_seg_classes": self._sem_seg_classes(), "stuff_classes": list(self.train_set.stuff_classes)}
                   if self.panoptic else {})}

    def describe(self) -> str:
        return (f"{self.cfg.model.kind} on {self.cfg.model.backbone}, {len(self.train_set.class_names)} classes, "
                f"{len(self.train_set)} training images")

    def finish(self, model: nn.Module, out_dir: Path, metrics: dict[str, Any]) -> dict[str, str]:
        if self.val_set is None or not len(self.val_set):
            return {}
        from .visualize import write_overlays

        samples = [self.val_set[i][0] for i in range(min(8, len(self.val_set)))]
        return {"predictions": str(write_overlays(model.eval(), samples, self.train_set.class_names,
                                                  out_dir / "predictions.png", self.trainer.device))}


def train_detector(cfg: DetectConfig, dist_info: DistInfo | None = None) -> RunSummary:
    """Train as ``cfg`` says; returns what happened (the main process has the file paths)."""
    try:
        return Trainer(DetectionTask(cfg), dist_info).train()
    finally:
        shutdown_distributed()

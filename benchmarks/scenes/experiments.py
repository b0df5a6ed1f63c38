"""What the scenes benchmarks add to the library's recipes, built on the engine's extension points.

A benchmark config is a library config plus a ``scenes:`` section read here (the library refuses unknown
keys, so these never leak into ``splitattn``)::

    scenes:
      style: true                 # classification pretraining in the scenes' look (pretraining.py)
      class_prior_init: true      # segmentation: classifiers start at the label prior (prior.py)
      lovasz_weight: 0.0          # segmentation: + this × Lovász-softmax (losses.py)
      time_budget_min: 14.5       # fit the iteration count to this much training on this machine (TimeBudgetHook)
      refine_steps: 32            # colour-guided refinement of the final prediction (refine.py)

:class:`ScenesSegmentationTask` is the library's SegmentationTask with the prior and the Lovász term;
:class:`TimeBudgetHook` an engine hook; :func:`evaluate_refined` the MS + flip evaluation with and without
the refinement in one pass.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn
from tqdm import tqdm

from splitattn.engine import HookBase
from splitattn.engine.config import build_config, read_config_data
from splitattn.engine.loop import autocast
from splitattn.segmentation.losses import segmentation_loss
from splitattn.segmentation.metrics import ConfusionMatrix, predict_logits
from splitattn.segmentation.task import SegmentationTask

from .losses import lovasz_softmax
from .prior import class_frequencies, init_class_prior
from .refine import BilateralRefine


@dataclasses.dataclass
class SceneOptions:
    style: bool = False
    resize: int = 0
    zoom: list[float] = dataclasses.field(default_factory=lambda: [1.0, 1.0])
    occluders: int = 0
    erasing: float = 0.0
    class_prior_init: bool = False
    lovasz_weight: float = 0.0
    lovasz_stride: int = 1
    time_budget_min: float = 0.0
    refine_steps: int = 0
    refine_window: int = 11
    refine_sigma_xy: float = 5.0
    refine_sigma_rgb: float = 0.03

    def refiner(self) -> BilateralRefine:
        return BilateralRefine(self.refine_steps, self.refine_window, self.refine_sigma_xy, self.refine_sigma_rgb)


def read_benchmark_config(cls: type, path: str | Path, overrides: Sequence[str] = ()) -> tuple[Any, SceneOptions]:
    """(the library config of ``cls``, the ``scenes:`` options) from a benchmark YAML and ``key=value`` overrides
    (``scenes.*`` overrides included)."""
    data = read_config_data(path, list(overrides))
    options = data.pop("scenes", {}) or {}
    unknown = set(options) - {f.name for f in dataclasses.fields(SceneOptions)}
    if unknown:
        raise ValueError(f"{path}: unknown scenes options {sorted(unknown)}")
    return build_config(cls, data), SceneOptions(**options)


def options_text(options: SceneOptions) -> str:
    return yaml.safe_dump({"scenes": dataclasses.asdict(options)}, default_flow_style=True).strip()


class ScenesSegmentationTask(SegmentationTask):
    """The library's segmentation task with the scenes preset's class-prior start and optional Lovász term."""

    def __init__(self, cfg, options: SceneOptions):
        super().__init__(cfg)
        self.options = options
        self.fitted_steps: int | None = None  # set by TimeBudgetHook

    def build_model(self) -> nn.Module:
        model = super().build_model()
        if self.options.class_prior_init:  # every process computes the same prior: no broadcast needed
            init_class_prior(model, class_frequencies(self.train_set))
        return model

    def total_steps(self) -> int:
        return self.fitted_steps or super().total_steps()

    def losses(self, model: nn.Module, batch) -> dict[str, torch.Tensor]:
        images, labels = batch
        outputs, ignore = model(images), self.train_set.ignore_index
        losses = {"loss_seg": segmentation_loss(outputs, labels, ignore, self.cfg.model.aux_weight)}
        if self.options.lovasz_weight:  # on every n-th pixel per axis: the sort is most of its cost
            step = slice(None, None, self.options.lovasz_stride)
            losses["loss_lovasz"] = self.options.lovasz_weight * lovasz_softmax(
                outputs["out"][..., step, step], labels[..., step, step], ignore)
        return losses


class TimeBudgetHook(HookBase):
    """Times steps 10-60 of a fresh run, then lowers the run's step count so training (compile included) ends
    within ``minutes`` on this machine; the task's schedule then ends at the fitted step (poly LR decays to it).
    The fitted count is kept in checkpoints: a resumed run keeps it."""

    FROM, AT = 10, 60

    def __init__(self, minutes: float):
        self.budget_s = 60.0 * minutes
        self.fitted: int | None = None

    def before_train(self) -> None:
        self.started = time.perf_counter()

    def after_step(self) -> None:
        t = self.trainer
        if self.fitted is not None or t.start_step:
            return
        if t.step == self.FROM:
            self.tick = time.perf_counter()
        elif t.step == self.AT:
            step_s = (time.perf_counter() - self.tick) / (self.AT - self.FROM)
            remaining = self.budget_s - (time.perf_counter() - self.started)
            fitted = torch.tensor([max(t.step, min(t.total_steps, t.step + int(0.98 * remaining / step_s)))])
            if t.dist.enabled:  # every process must stop at the same step
                torch.distributed.broadcast(fitted, 0)
            self._apply(int(fitted))
            if t.dist.is_main:
                print(f"time budget: {step_s:.3f} s per step, {remaining / 60:.1f} min left → {self.fitted} steps",
                      flush=True)

    def _apply(self, fitted: int) -> None:
        t = self.trainer
        self.fitted = t.task.fitted_steps = fitted
        t.total_steps = t.max_steps = fitted

    def state_dict(self) -> dict[str, Any]:
        return {"fitted": self.fitted}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("fitted"):
            self._apply(int(state["fitted"]))


@torch.no_grad()
def evaluate_refined(model: nn.Module, dataset, refine: BilateralRefine, scales: Sequence[float], flip: bool,
                     crop_size: int, base_size: int, amp: str = "none", device: str = "cpu") -> dict[str, Any]:
    """pixAcc / mIoU of the (multi-scale + flip) prediction with and without the refinement, in one pass."""
    device = torch.device(device)
    model.eval()
    plain, refined = (ConfusionMatrix(dataset.num_classes, dataset.ignore_index) for _ in range(2))
    for index in tqdm(range(len(dataset)), desc="eval", leave=False):
        image, label = dataset[index]
        with autocast(device, amp):
            logits = predict_logits(model, image.to(device), dataset.num_classes, scales=scales, flip=flip,
                                    crop_size=crop_size, base_size=base_size)
        plain.update(logits.argmax(0).cpu(), label)
        refined.update(refine(logits.float().softmax(0), image.to(device)).argmax(0).cpu(), label)
    names = dataset.class_names or [str(i) for i in range(dataset.num_classes)]
    return {"pixAcc": plain.pixel_accuracy(), "mIoU": plain.mean_iou(),
            "refined": {"pixAcc": refined.pixel_accuracy(), "mIoU": refined.mean_iou(),
                        "iou": refined.summary(names)["iou"]}}

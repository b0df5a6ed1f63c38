"""Segmentation training configuration (YAML + ``key=value`` overrides, strict checks).

Defaults are the paper's ADE20K DeepLabV3 run in PyTorch-Encoding (paper-facts §8.2): dilated
backbone at output stride 8, SyncBN, aux FCN head (weight 0.2), SGD momentum 0.9, wd 1e-4,
lr 0.004 per 16 images with the heads at 10×, poly decay (power 0.9), base size 520 / crop 480,
random scale 0.5–2.0, flip, 120 epochs; evaluation at scales 0.5–1.75 with flip.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..config import ConfigError, build_config, read_config_data
from ..engine.iteration_trainer import IterationEngineConfig
from .refine import BilateralRefine


@dataclass
class SegmentModelConfig:
    kind: Literal["deeplabv3", "deeplabv3plus", "fcn"] = "deeplabv3"
    backbone: str = "resnest50"
    pretrained_backbone: bool | str = True
    overrides: dict[str, Any] = field(default_factory=dict)
    output_stride: int = 8
    aux: bool = True
    aux_weight: float = 0.2
    lovasz_weight: float = 0.0  # + this × Lovász-softmax on the main output (0: cross-entropy only, the paper's)
    lovasz_stride: int = 1  # the Lovász term on every n-th pixel along each axis (n² times fewer to sort)
    head_channels: int = 256  # DeepLabV3 head width (the paper's 256)
    atrous_rates: list[int] = field(default_factory=list)  # [] = the paper's (12, 24, 36) at OS 8, halved at OS 16
    # classifiers start at the training labels' class frequencies (RetinaNet's prior init; off in the paper)
    class_prior_init: bool = False
    norm: Literal["syncbn", "bn", "frozenbn"] = "syncbn"

    def segmenter_kwargs(self, num_classes: int, progress: bool = True) -> dict[str, Any]:
        return dict(kind=self.kind, backbone=self.backbone, num_classes=num_classes, output_stride=self.output_stride,
                    aux=self.aux, pretrained_backbone=self.pretrained_backbone, norm=self.norm,
                    head_channels=self.head_channels, atrous_rates=tuple(self.atrous_rates) or None,
                    progress=progress,
                    **self.overrides)


@dataclass
class SegmentDataConfig:
    dataset: Literal["ade20k", "voc", "scenes"] = "ade20k"
    root: str = "datasets/ADEChallengeData2016"
    train_split: str = ""  # '' = the dataset's own name (ade20k: training, voc: train, scenes: train)
    val_split: str = ""  # '' = validation / val / val
    base_size: int = 520
    crop_size: int = 480
    scale_range: list[float] = field(default_factory=lambda: [0.5, 2.0])
    flip_prob: float = 0.5
    workers: int = 4


@dataclass
class SegmentOptimConfig:
    batch_size: int = 16
    lr: float = 0.004  # at batch 16 (Encoding's ADE20K setting); scale with the batch
    head_lr_mult: float = 10.0
    momentum: float = 0.9
    weight_decay: float = 1e-4
    epochs: float = 120.0
    max_iters: int = 0  # 0: epochs × ceil(train images / batch_size)
    # > 0: after timing iterations 10-60, lower max_iters so training (compile included) ends within this many
    # minutes on this machine; the poly schedule then decays to the fitted end
    time_budget_min: float = 0.0
    poly_power: float = 0.9
    warmup_iters: int = 0
    grad_clip: float | None = None


@dataclass
class SegmentEvalConfig:
    scales: list[float] = field(default_factory=lambda: [0.5, 0.75, 1.0, 1.25, 1.5, 1.75])
    flip: bool = True
    final_scales: bool = True  # the end of training uses `scales` + `flip`; periodic evals are single-scale
    crop_size: int = 0  # sliding-window size for images larger than it; 0: data.crop_size (Encoding's)
    # colour-guided refinement of the final prediction (segmentation/refine.py); 0 steps: off, the paper's
    refine_steps: int = 0
    refine_window: int = 11
    refine_sigma_xy: float = 5.0
    refine_sigma_rgb: float = 0.03

    def window(self, data: SegmentDataConfig) -> int:
        return self.crop_size or data.crop_size

    def refiner(self) -> BilateralRefine:
        return BilateralRefine(self.refine_steps, self.refine_window, self.refine_sigma_xy, self.refine_sigma_rgb)


@dataclass
class SegmentEngineConfig(IterationEngineConfig):
    out_dir: str = "runs/segment"
    eval_batch_size: int = 1
    # torch.compile of the training module (fixed crop size: one graph); evaluation runs the plain module
    compile: bool = False


@dataclass
class SegmentConfig:
    model: SegmentModelConfig = field(default_factory=SegmentModelConfig)
    data: SegmentDataConfig = field(default_factory=SegmentDataConfig)
    optim: SegmentOptimConfig = field(default_factory=SegmentOptimConfig)
    eval: SegmentEvalConfig = field(default_factory=SegmentEvalConfig)
    engine: SegmentEngineConfig = field(default_factory=SegmentEngineConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def total_iters(self, train_images: int) -> int:
        o = self.optim
        return o.max_iters or max(1, round(o.epochs * math.ceil(train_images / o.batch_size)))


def _check(cfg: SegmentConfig) -> None:
    m, d, o = cfg.model, cfg.data, cfg.optim
    rules = [
        (m.output_stride in (8, 16), "model.output_stride must be 8 (the paper's) or 16"),
        (d.crop_size >= 16 and d.base_size >= 16, "data.crop_size and data.base_size must be >= 16"),
        (len(d.scale_range) == 2 and 0 < d.scale_range[0] <= d.scale_range[1], "data.scale_range must be [lo, hi]"),
        (0.0 <= d.flip_prob <= 1.0, "data.flip_prob must be in [0, 1]"),
        (o.batch_size >= 1 and o.lr > 0 and o.epochs > 0 and o.max_iters >= 0, "need batch_size >= 1, lr > 0"),
        (bool(cfg.eval.scales) and min(cfg.eval.scales) > 0, "eval.scales must be positive"),
        (cfg.eval.crop_size >= 0, "eval.crop_size must be >= 0 (0: data.crop_size)"),
        (not m.atrous_rates or (len(m.atrous_rates) == 3 and min(m.atrous_rates) >= 1),
         "model.atrous_rates must be [] (the paper's) or three rates >= 1"),
        (m.aux_weight >= 0 and m.lovasz_weight >= 0, "model.aux_weight and model.lovasz_weight must be >= 0"),
        (m.lovasz_stride >= 1, "model.lovasz_stride must be >= 1"),
        (o.time_budget_min >= 0, "optim.time_budget_min must be >= 0 (0: no budget)"),
    ]
    for ok, message in rules:
        if not ok:
            raise ConfigError(message)
    try:
        cfg.eval.refiner()
    except ValueError as error:
        raise ConfigError(f"eval.refine_*: {error}") from None


def load_segment_config(path: str | Path | None = None, overrides: list[str] | None = None) -> SegmentConfig:
    data = read_config_data(path, overrides, "configs/segmentation/ade20k_deeplabv3_resnest50.yaml")
    cfg = build_config(SegmentConfig, data)
    _check(cfg)
    return cfg


def segment_config_from_dict(data: dict[str, Any]) -> SegmentConfig:
    cfg = build_config(SegmentConfig, data)
    _check(cfg)
    return cfg

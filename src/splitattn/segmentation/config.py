"""Segmentation training configuration (YAML + ``key=value`` overrides, strict checks).

Defaults are the paper's ADE20K DeepLabV3 run in PyTorch-Encoding (paper-facts §8.2): dilated
backbone at output stride 8, SyncBN, aux FCN head (weight 0.2), SGD momentum 0.9, wd 1e-4,
lr 0.004 per 16 images with the heads at 10×, poly decay (power 0.9), base size 520 / crop 480,
random scale 0.5–2.0, flip, 120 epochs; evaluation at scales 0.5–1.75 with flip.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..engine.config import EngineConfig, OptimConfig, TaskConfig, build_config, load_config


@dataclass
class SegmentModelConfig:
    kind: Literal["deeplabv3", "deeplabv3plus", "fcn"] = "deeplabv3"
    backbone: str = "resnest50"
    pretrained_backbone: bool | str = True
    overrides: dict[str, Any] = field(default_factory=dict)
    grad_checkpointing: bool | list[int] = False  # recompute the backbone's blocks in backward: True, or stages [3, 4]
    output_stride: int = 8
    aux: bool = True
    aux_weight: float = 0.2
    head_channels: int = 256  # DeepLabV3 head width (the paper's 256)
    atrous_rates: list[int] = field(default_factory=list)  # [] = the paper's (12, 24, 36) at OS 8, halved at OS 16
    norm: Literal["syncbn", "bn", "frozenbn"] = "syncbn"

    def rules(self) -> list[tuple[bool, str]]:
        return [
            (self.output_stride in (8, 16), "model.output_stride must be 8 (the paper's) or 16"),
            (not self.atrous_rates or (len(self.atrous_rates) == 3 and min(self.atrous_rates) >= 1),
             "model.atrous_rates must be [] (the paper's) or three rates >= 1"),
            (self.aux_weight >= 0, "model.aux_weight must be >= 0"),
        ]

    def segmenter_kwargs(self, num_classes: int, progress: bool = True) -> dict[str, Any]:
        return dict(kind=self.kind, backbone=self.backbone, num_classes=num_classes, output_stride=self.output_stride,
                    aux=self.aux, pretrained_backbone=self.pretrained_backbone, norm=self.norm,
                    head_channels=self.head_channels, atrous_rates=tuple(self.atrous_rates) or None,
                    progress=progress,
                    **self.overrides)


@dataclass
class SegmentDataConfig:
    dataset: Literal["ade20k", "voc", "pcontext", "cityscapes", "folder"] = "ade20k"
    root: str = "datasets/ADEChallengeData2016"
    train_split: str = ""  # '' = the dataset's own name (ade20k: training, voc / pcontext / cityscapes / folder: train)
    val_split: str = ""  # '' = validation (ade20k) / val (the others)
    # folder only: ROOT/SPLIT/images/NAME.* with ROOT/SPLIT/<label_dir>/NAME.png holding 0..num_classes-1 (+255)
    num_classes: int = 0
    class_names: list[str] = field(default_factory=list)  # [] = 'class 0', 'class 1', …
    label_dir: str = "labels"
    base_size: int = 520
    crop_size: int = 480
    scale_range: list[float] = field(default_factory=lambda: [0.5, 2.0])
    flip_prob: float = 0.5
    workers: int = 4

    def rules(self) -> list[tuple[bool, str]]:
        return [
            (self.crop_size >= 16 and self.base_size >= 16, "data.crop_size and data.base_size must be >= 16"),
            (len(self.scale_range) == 2 and 0 < self.scale_range[0] <= self.scale_range[1],
             "data.scale_range must be [lo, hi] with 0 < lo <= hi"),
            (0.0 <= self.flip_prob <= 1.0, "data.flip_prob must be in [0, 1]"),
            (self.dataset != "folder" or self.num_classes >= 2, "data.dataset=folder needs data.num_classes >= 2"),
            (self.dataset != "cityscapes" or "test" not in (self.train_split, self.val_split),
             "Cityscapes test labels are withheld: train on data.train_split=train and evaluate on val"),
            (self.workers >= 0, "data.workers must be >= 0"),
        ]


@dataclass
class SegmentOptimConfig(OptimConfig):
    batch_size: int = 16
    lr: float = 0.004  # at batch 16 (Encoding's ADE20K setting); scale with the batch
    head_lr_mult: float = 10.0
    weight_decay: float = 1e-4  # every parameter, as Encoding
    epochs: float = 120.0
    max_iters: int = 0  # 0: epochs × ceil(train images / batch_size)
    poly_power: float = 0.9
    warmup_iters: int = 0

    def rules(self) -> list[tuple[bool, str]]:
        return super().rules() + [
            (self.lr > 0 and self.epochs > 0 and self.max_iters >= 0,
             "need optim.lr > 0, optim.epochs > 0 and optim.max_iters >= 0"),
            (self.warmup_iters >= 0 and self.head_lr_mult > 0, "need optim.warmup_iters >= 0, head_lr_mult > 0"),
        ]


@dataclass
class SegmentEvalConfig:
    scales: list[float] = field(default_factory=lambda: [0.5, 0.75, 1.0, 1.25, 1.5, 1.75])
    flip: bool = True
    final_scales: bool = True  # the end of training uses `scales` + `flip`; periodic evals are single-scale
    crop_size: int = 0  # sliding-window size for images larger than it; 0: data.crop_size (Encoding's)

    def window(self, data: SegmentDataConfig) -> int:
        return self.crop_size or data.crop_size

    def rules(self) -> list[tuple[bool, str]]:
        return [(bool(self.scales) and min(self.scales) > 0, "eval.scales must be positive"),
                (self.crop_size >= 0, "eval.crop_size must be >= 0 (0: data.crop_size)")]


@dataclass
class SegmentConfig(TaskConfig):
    model: SegmentModelConfig = field(default_factory=SegmentModelConfig)
    data: SegmentDataConfig = field(default_factory=SegmentDataConfig)
    optim: SegmentOptimConfig = field(default_factory=SegmentOptimConfig)
    eval: SegmentEvalConfig = field(default_factory=SegmentEvalConfig)
    engine: EngineConfig = field(default_factory=lambda: EngineConfig(out_dir="runs/segment"))

    def total_iters(self, train_images: int) -> int:
        o = self.optim
        return o.max_iters or max(1, round(o.epochs * math.ceil(train_images / o.batch_size)))


def load_segment_config(path: str | Path | None = None, overrides: list[str] | None = None) -> SegmentConfig:
    return load_config(SegmentConfig, path, overrides)


def segment_config_from_dict(data: dict[str, Any]) -> SegmentConfig:
    return build_config(SegmentConfig, data)

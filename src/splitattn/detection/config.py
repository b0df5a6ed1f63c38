"""Detection training configuration: typed sections, YAML + ``key=value`` overrides, strict checks.

Defaults are detectron2's ResNeSt COCO 1x configs (paper-facts §8.1): 16 images per batch, lr 0.02,
90k iterations with steps at 60k / 80k, 1000-iteration linear warm-up from 0.001×, wd 1e-4 (not on
norms or biases), short side range-sampled in 640–800 (max 1333), test 800, SyncBN, FREEZE_AT 2.
One exception: precise BN (``optim.precise_bn_iters``) is off by default, where those configs enable it with
detectron2's 200 iterations (``TEST.PRECISE_BN``); set ``optim.precise_bn_iters: 200`` to run it as they do.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..engine.config import EngineConfig, OptimConfig, TaskConfig, build_config, load_config


@dataclass
class DetectModelConfig:
    # the panoptic kinds read COCO panoptic data (data.*_annotations: panoptic_*.json, PNGs beside them) and score PQ
    kind: Literal["faster_rcnn", "mask_rcnn", "cascade_rcnn", "cascade_mask_rcnn", "panoptic_fpn",
                  "cascade_panoptic_fpn"] = "faster_rcnn"
    backbone: str = "resnest50"
    pretrained_backbone: bool | str = True  # True = the zoo's ImageNet weights; or an official-layout file
    # further create_detector arguments: backbone ones (deform_stages, base_planes, ...) and head ones
    # (sem_seg_norm, mask_head_norm, the panoptic combination thresholds)
    overrides: dict[str, Any] = field(default_factory=dict)
    grad_checkpointing: bool | list[int] = False  # recompute the backbone's blocks in backward: True, or stages [3, 4]
    norm: Literal["syncbn", "bn", "frozenbn", "gn"] = "syncbn"
    head_norm: Literal["syncbn", "bn", "gn", "none"] | None = None  # None: follow norm
    freeze_at: int = 2
    box_head: Literal["4conv1fc", "2fc"] = "4conv1fc"
    fpn_channels: int = 256
    box_conv_dim: int = 256
    box_fc_dim: int = 1024
    mask_conv_dim: int = 256
    mask_num_convs: int = 4
    anchor_sizes: list[int] = field(default_factory=lambda: [32, 64, 128, 256, 512])
    train_sizes: list[int] = field(default_factory=lambda: [640, 800])  # range: [lo, hi]; choice: the list
    size_sampling: Literal["range", "choice"] = "range"
    test_size: int = 800
    max_size: int = 1333
    max_size_test: int | None = None  # None: max_size (the tricks configs train at 1440 and test at 1333)
    box_batch_size_per_image: int = 512
    rpn_post_nms_train: int | None = None  # None: 1000, 2000 for the cascades
    detections_per_img: int = 100
    roi_sampling_ratio: int = 0  # RoIAlign samples per bin side; 0 = adaptive (detectron2)
    # detectron2: what detectron2 + the official plug-in compute (the paper's); torchvision: its RPN / RoIHeads
    flavour: Literal["detectron2", "torchvision"] = "detectron2"

    def rules(self) -> list[tuple[bool, str]]:
        return [
            (self.size_sampling == "choice" or (len(self.train_sizes) == 2
                                                and self.train_sizes[0] <= self.train_sizes[1]),
             "model.train_sizes must be [low, high] with size_sampling=range"),
            (bool(self.train_sizes) and min(self.train_sizes) >= 16 and self.test_size >= 16,
             "image sizes must be >= 16 px"),
            (0 <= self.freeze_at <= 5, "model.freeze_at must be 0..5 (2 = detectron2's default)"),
            (not self.kind.endswith("panoptic_fpn") or self.flavour == "detectron2",
             "model.kind panoptic_fpn / cascade_panoptic_fpn needs model.flavour=detectron2"),
            (not {"sem_seg_classes", "kind", "num_classes"} & set(self.overrides),
             "model.overrides cannot set sem_seg_classes, kind or num_classes: the data and model.kind decide them"),
        ]

    def sizes(self) -> tuple[int, ...]:
        if self.size_sampling == "range":
            low, high = self.train_sizes
            return tuple(range(low, high + 1))
        return tuple(self.train_sizes)

    def detector_kwargs(self, num_classes: int, progress: bool = True, sem_seg_classes: int | None = None
                        ) -> dict[str, Any]:
        """``sem_seg_classes``: the panoptic kinds' semantic classes (stuff + 1 for all things), from the data."""
        extra = {"sem_seg_classes": sem_seg_classes} if sem_seg_classes is not None else {}
        return dict(**extra, kind=self.kind, backbone=self.backbone, num_classes=num_classes,
                    pretrained_backbone=self.pretrained_backbone, norm=self.norm, head_norm=self.head_norm,
                    freeze_at=self.freeze_at, box_head_type=self.box_head, fpn_channels=self.fpn_channels,
                    box_conv_dim=self.box_conv_dim, box_fc_dim=self.box_fc_dim, mask_conv_dim=self.mask_conv_dim,
                    mask_num_convs=self.mask_num_convs,
                    anchor_sizes=tuple(self.anchor_sizes), min_size=self.sizes(), test_size=self.test_size,
                    max_size=self.max_size, max_size_test=self.max_size_test,
                    box_batch_size_per_image=self.box_batch_size_per_image,
                    rpn_post_nms_train=self.rpn_post_nms_train, detections_per_img=self.detections_per_img,
                    roi_sampling_ratio=self.roi_sampling_ratio, flavour=self.flavour, progress=progress,
                    **self.overrides)


@dataclass
class DetectDataConfig:
    train_images: str = "datasets/coco/train2017"
    train_annotations: str = "datasets/coco/annotations/instances_train2017.json"
    val_images: str = "datasets/coco/val2017"
    val_annotations: str = "datasets/coco/annotations/instances_val2017.json"
    flip_prob: float = 0.5
    workers: int = 4
    strict: bool = False  # bad annotations are fatal instead of dropped and counted (training and validation)
    # panoptic kinds: the PNG folders of the panoptic jsons (None: the json's path without .json, as COCO ships it)
    train_panoptic_dir: str | None = None
    val_panoptic_dir: str | None = None

    def rules(self) -> list[tuple[bool, str]]:
        return [(0.0 <= self.flip_prob <= 1.0, "data.flip_prob must be in [0, 1]"),
                (self.workers >= 0, "data.workers must be >= 0")]


@dataclass
class DetectOptimConfig(OptimConfig):
    batch_size: int = 16  # images per iteration over all processes
    lr: float = 0.02
    weight_decay: float = 1e-4  # conv / linear weights only
    max_iters: int = 90000
    steps: list[int] = field(default_factory=lambda: [60000, 80000])
    gamma: float = 0.1
    warmup_iters: int = 1000
    warmup_factor: float = 0.001
    # precise BN (detectron2's TEST.PRECISE_BN, NUM_ITER 200 in the paper's configs) before every evaluation
    # and at the end: BN running statistics re-measured over this many training forward passes; 0 = off
    precise_bn_iters: int = 0

    def rules(self) -> list[tuple[bool, str]]:
        return super().rules() + [
            (self.max_iters >= 1 and self.lr > 0, "need optim.max_iters >= 1 and optim.lr > 0"),
            (self.steps == sorted(self.steps) and all(0 < s <= self.max_iters for s in self.steps),
             "optim.steps must be increasing iterations within max_iters"),
            (0 <= self.warmup_iters <= self.max_iters and 0 < self.warmup_factor <= 1,
             "need 0 <= optim.warmup_iters <= max_iters and 0 < warmup_factor <= 1"),
            (self.precise_bn_iters >= 0,
             "optim.precise_bn_iters must be >= 0 (0: no precise BN; detectron2's ResNeSt configs use 200)"),
        ]


@dataclass
class DetectConfig(TaskConfig):
    model: DetectModelConfig = field(default_factory=DetectModelConfig)
    data: DetectDataConfig = field(default_factory=DetectDataConfig)
    optim: DetectOptimConfig = field(default_factory=DetectOptimConfig)
    engine: EngineConfig = field(default_factory=lambda: EngineConfig(out_dir="runs/detect"))


def load_detect_config(path: str | Path | None = None, overrides: list[str] | None = None) -> DetectConfig:
    return load_config(DetectConfig, path, overrides)


def detect_config_from_dict(data: dict[str, Any]) -> DetectConfig:
    return build_config(DetectConfig, data)

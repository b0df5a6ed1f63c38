"""Classification training configuration.

Defaults are the recipe that produced the released weights (paper-facts.md §7.2, the MXNet Gluon run):
Nesterov SGD, lr = 0.1·B/256, 5-epoch warm-up then per-iteration cosine, wd 1e-4 on conv and linear
weights only, label smoothing 0.1, mixup 0.2 with the reversed batch, AutoAugment, DropBlock ramped
0 → 0.1, zero-γ last BN, 270 epochs. The engine section is the one every task shares
(:class:`splitattn.engine.config.EngineConfig`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..engine.config import EngineConfig, OptimConfig, TaskConfig, load_config


@dataclass
class ModelConfig:
    name: str = "resnest50"
    pretrained: bool | str = False  # True = released weights, or a path / URL
    overrides: dict[str, Any] = field(default_factory=dict)  # any create_model argument
    drop_rate: float | None = None  # dropout before fc; None = the zoo's (0.2 for 200/269)
    grad_checkpointing: bool | list[int] = False  # recompute the backbone's blocks in backward: True, or stages [3, 4]


@dataclass
class DataConfig:
    dataset: Literal["imagefolder", "fashion_mnist"] = "imagefolder"
    root: str = ""  # imagefolder: folder with train/ and val/; fashion_mnist: IDX files ('' = Debian's)
    download: bool = False  # fashion_mnist only: fetch with torchvision into root when the files are missing
    train_split: str = "train"
    val_split: str = "val"
    train_transform: Literal["imagenet", "small"] = "imagenet"  # 'small': pad-crop + flip for 28-32 px
    train_crop: int = 224
    eval_crop: int | None = None  # None: the zoo entry's eval crop
    auto_augment: Literal["imagenet", "randaugment", "none"] = "imagenet"
    randaugment_ops: int = 2
    randaugment_magnitude: int = 12
    color_jitter: float = 0.4
    lighting: float = 0.1  # PCA lighting noise std (AlexNet-style)
    pad_crop: int = 2  # 'small' transform: random crop after padding by this many pixels
    random_erasing: float = 0.0  # torchvision's RandomErasing probability (Zhong et al. 2020); 0 off
    train_subset: int | None = None  # use a class-balanced subset of this many training images
    val_subset: int | None = None
    workers: int = 4
    strict: bool = False  # unreadable images are fatal instead of skipped and counted

    def rules(self) -> list[tuple[bool, str]]:
        return [
            (self.train_crop >= 8 and (self.eval_crop is None or self.eval_crop >= 8), "data crops must be >= 8 px"),
            (self.workers >= 0 and self.pad_crop >= 0, "data.workers and data.pad_crop must be >= 0"),
            (self.train_subset is None or self.train_subset > 0, "data.train_subset must be positive"),
            (self.val_subset is None or self.val_subset > 0, "data.val_subset must be positive"),
            (0 <= self.random_erasing <= 1, "data.random_erasing must be a probability in [0, 1]"),
            (self.dataset != "imagefolder" or bool(self.root),
             "data.root is empty: point it at a folder with train/CLASS/*.jpg and val/CLASS/*.jpg"),
        ]


@dataclass
class ClassificationOptimConfig(OptimConfig):
    batch_size: int = 8192
    lr: float | None = None  # None: lr_per_256 · batch_size / 256
    lr_per_256: float = 0.1
    nesterov: bool = True
    weight_decay: float = 1e-4  # on conv / linear weights only
    epochs: int = 270
    warmup_epochs: float = 5.0  # linear from 0, per iteration
    label_smoothing: float = 0.1
    mixup: float = 0.2  # Beta(α, α); 0 disables
    cutmix: float = 0.0  # CutMix Beta(α, α), not in the released recipe; with mixup too, a coin picks per batch
    mixup_off_epochs: int = 0  # train the last N epochs without mixup / CutMix (Gluon's --mixup-off-epoch)
    drop_block: float = 0.1  # DropBlock probability reached at the end (linear ramp from 0)
    zero_init_last: bool = True

    def base_lr(self) -> float:
        return self.lr if self.lr is not None else self.lr_per_256 * self.batch_size / 256

    def rules(self) -> list[tuple[bool, str]]:
        return super().rules() + [
            (self.epochs >= 1 and 0 <= self.warmup_epochs <= self.epochs,
             "need optim.epochs >= 1 and 0 <= warmup_epochs <= epochs"),
            (0.0 <= self.label_smoothing < 1.0, "optim.label_smoothing must be in [0, 1)"),
            (self.mixup >= 0.0 and self.cutmix >= 0.0 and 0 <= self.mixup_off_epochs <= self.epochs,
             "need optim.mixup >= 0, optim.cutmix >= 0, mixup_off_epochs <= epochs"),
            (0.0 <= self.drop_block < 1.0, "optim.drop_block must be in [0, 1)"),
            (self.base_lr() > 0, "the learning rate must be > 0"),
        ]


@dataclass
class ClassificationConfig(TaskConfig):
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: ClassificationOptimConfig = field(default_factory=ClassificationOptimConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)

    def base_lr(self) -> float:
        return self.optim.base_lr()


def load_classification_config(path: str | Path | None = None,
                               overrides: list[str] | None = None) -> ClassificationConfig:
    """Read a YAML config (may be omitted), apply ``key=value`` overrides, check everything."""
    return load_config(ClassificationConfig, path, overrides)

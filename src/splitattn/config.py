"""Training configuration: typed sections, YAML files, ``key=value`` overrides, strict validation.

Defaults are the recipe that produced the released weights (paper-facts.md §7.2, the MXNet Gluon
run): Nesterov SGD, lr = 0.1·B/256, 5-epoch warm-up then per-iteration cosine, wd 1e-4 on conv and
linear weights only, label smoothing 0.1, mixup 0.2 with the reversed batch, AutoAugment, DropBlock
ramped 0 → 0.1, zero-γ last BN, 270 epochs. A YAML file and ``key=value`` overrides change them;
an unknown key is an error that suggests the close match.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml


class ConfigError(ValueError):
    """A configuration value or key is invalid; the message names the key and the fix."""


@dataclass
class ModelConfig:
    name: str = "resnest50"
    pretrained: bool | str = False  # True = released weights, or a path / URL
    overrides: dict[str, Any] = field(default_factory=dict)  # any create_model argument
    drop_rate: float | None = None  # dropout before fc; None = the zoo's (0.2 for 200/269)


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
    # fashion_mnist only: 'scenes' draws each image as the scenes draw their garments (tinted on a colour
    # gradient, RGB; data/scene_style.py): the pretraining for the scenes transfer benchmarks
    style: Literal["plain", "scenes"] = "plain"
    zoom: list[float] = field(default_factory=lambda: [1.0, 1.0])  # fashion_mnist: random resize range; [1, 1] off
    occluders: int = 0  # style=scenes: up to this many other garments around each one (a scene crop's view)
    random_erasing: float = 0.0  # fashion_mnist: Random Erasing probability (Zhong et al.); 0 off
    resize: int = 0  # fashion_mnist: train and test at this square size (bilinear from 28 px); 0 keeps 28
    train_subset: int | None = None  # use a class-balanced subset of this many training images
    val_subset: int | None = None
    workers: int = 4
    strict: bool = False  # unreadable images are fatal instead of skipped and counted


@dataclass
class OptimConfig:
    batch_size: int = 8192  # global batch over all processes (and accumulation steps)
    accum_steps: int = 1  # gradient accumulation: each process runs batch / (world · accum) at a time
    lr: float | None = None  # None: lr_per_256 · batch_size / 256
    lr_per_256: float = 0.1
    momentum: float = 0.9
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
    grad_clip: float | None = None


@dataclass
class EngineConfig:
    out_dir: str = "runs/train"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: Literal["none", "bf16", "fp16"] = "none"
    channels_last: bool = False
    compile: bool = False
    sync_bn: bool = False
    seed: int = 1
    deterministic: bool = False
    resume: str = ""  # '' | 'auto' (out_dir/checkpoints/last.pth when it exists) | a checkpoint path
    checkpoint_every_steps: int = 0  # 0: once per epoch only
    eval_every_epochs: int = 1
    max_steps: int | None = None  # stop after this many optimizer steps (smoke runs)
    log_every_steps: int = 20
    tensorboard: bool = True  # when the tensorboard package is installed
    progress: bool = True


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)

    def base_lr(self) -> float:
        return self.optim.lr if self.optim.lr is not None else self.optim.lr_per_256 * self.optim.batch_size / 256

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ----------------------------------------------------------------------------- validation
def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is list:
        return "a list"
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    names = {type(None): "null", int: "an integer", float: "a number", str: "a string", bool: "true/false"}
    return names.get(tp, getattr(tp, "__name__", str(tp)))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(tp):
            try:
                return _coerce(value, option, key)
            except ConfigError:
                continue
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
        close = difflib.get_close_matches(str(value), [str(a) for a in typing.get_args(tp)], n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"{key}: {value!r} is not one of {_type_name(tp)}{hint}")
    if origin is list:
        if isinstance(value, (list, tuple)):
            (item_type,) = typing.get_args(tp)
            return [_coerce(item, item_type, f"{key}[{i}]") for i, item in enumerate(value)]
        raise ConfigError(f"{key}: expected a list such as [1, 2], got {value!r}")
    if origin is dict:
        if isinstance(value, dict):
            return dict(value)
        raise ConfigError(f"{key}: expected a mapping, got {value!r}")
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(f"{key}: expected null, got {value!r}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads '1e6' (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    raise ConfigError(f"{key}: unsupported type {tp}")


def _build(cls: type, data: dict[str, Any], prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f"; did you mean '{prefix}{close[0]}'?" if close else f"; valid keys: {', '.join(names)}"
            raise ConfigError(f"unknown config key '{prefix}{key}'{hint}")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = _build(tp, value, f"{prefix}{key}.")
        else:
            kwargs[key] = _coerce(value, tp, f"{prefix}{key}")
    return cls(**kwargs)


def _check(cfg: TrainConfig) -> None:
    """Cross-field rules that types alone cannot express."""
    o, d, e = cfg.optim, cfg.data, cfg.engine
    rules = [
        (o.batch_size >= 1 and o.accum_steps >= 1, "optim.batch_size and optim.accum_steps must be >= 1"),
        (o.epochs >= 1 and 0 <= o.warmup_epochs <= o.epochs, "need optim.epochs >= 1 and 0 <= warmup_epochs <= epochs"),
        (0.0 <= o.label_smoothing < 1.0, "optim.label_smoothing must be in [0, 1)"),
        (o.mixup >= 0.0 and o.cutmix >= 0.0 and 0 <= o.mixup_off_epochs <= o.epochs,
         "need optim.mixup >= 0, optim.cutmix >= 0, mixup_off_epochs <= epochs"),
        (0.0 <= o.drop_block < 1.0, "optim.drop_block must be in [0, 1)"),
        (o.momentum >= 0 and o.weight_decay >= 0 and cfg.base_lr() > 0, "lr must be > 0, momentum and wd >= 0"),
        (d.train_crop >= 8 and (d.eval_crop is None or d.eval_crop >= 8), "data crops must be >= 8 px"),
        (d.workers >= 0 and d.pad_crop >= 0, "data.workers and data.pad_crop must be >= 0"),
        (d.train_subset is None or d.train_subset > 0, "data.train_subset must be positive"),
        (d.style == "plain" or d.dataset == "fashion_mnist", "data.style=scenes applies to fashion_mnist only"),
        (len(d.zoom) == 2 and 0 < d.zoom[0] <= d.zoom[1], "data.zoom must be [lo, hi] with 0 < lo <= hi"),
        (list(d.zoom) == [1.0, 1.0] or d.dataset == "fashion_mnist", "data.zoom applies to fashion_mnist only"),
        (0 <= d.occluders <= 8, "data.occluders must be 0..8"),
        (0 <= d.random_erasing <= 1, "data.random_erasing must be a probability in [0, 1]"),
        (d.random_erasing == 0 or d.dataset == "fashion_mnist", "data.random_erasing applies to fashion_mnist only"),
        (d.resize == 0 or d.resize >= 8, "data.resize must be 0 (keep 28 px) or at least 8"),
        (d.resize == 0 or d.dataset == "fashion_mnist", "data.resize applies to fashion_mnist only"),
        (d.occluders == 0 or d.style == "scenes", "data.occluders needs data.style=scenes"),
        (e.checkpoint_every_steps >= 0 and e.eval_every_epochs >= 1, "engine.eval_every_epochs must be >= 1"),
        (e.max_steps is None or e.max_steps > 0, "engine.max_steps must be positive"),
    ]
    for ok, message in rules:
        if not ok:
            raise ConfigError(message)
    if d.dataset == "imagefolder" and not d.root:
        raise ConfigError("data.root is empty: point it at a folder with train/CLASS/*.jpg and val/CLASS/*.jpg")


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``['optim.lr=0.4', 'data.root=/data']`` → nested dict; values are parsed as YAML scalars."""
    tree: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not key=value (e.g. optim.epochs=10)")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        if len(parts) < 2 or not all(parts):
            raise ConfigError(f"override key {key!r} needs a section, e.g. optim.{key} or data.{key}")
        node = tree
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else ""
    return tree


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def read_config_data(path: str | Path | None, overrides: list[str] | None, example: str) -> dict[str, Any]:
    """A YAML file (may be omitted) merged with ``key=value`` overrides, as a nested dict."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist (examples: {example})")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{path} is not valid YAML: {err}") from None
    return _merge(data, parse_overrides(overrides or []))


def build_config(cls: type, data: dict[str, Any]) -> Any:
    """A typed config dataclass from a nested dict; unknown keys and bad types raise ConfigError."""
    return _build(cls, data, "")


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """Read a YAML config (may be omitted), apply ``key=value`` overrides, validate everything."""
    data = read_config_data(path, overrides, "configs/imagenet/resnest50.yaml")
    cfg = _build(TrainConfig, data, "")
    _check(cfg)
    return cfg


def config_from_dict(data: dict[str, Any]) -> TrainConfig:
    cfg = _build(TrainConfig, data, "")
    _check(cfg)
    return cfg

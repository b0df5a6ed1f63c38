"""Configuration for every task: typed dataclass sections, YAML files, ``key=value`` overrides, strict checks.

A task config is a :class:`TaskConfig` subclass with ``model``, ``data`` and ``optim`` sections of its own
(``optim`` extends :class:`OptimConfig`) and the one :class:`EngineConfig` every task shares. Values are
checked by type when read (an unknown key suggests the close match) and by each section's ``rules()``.
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
class EngineConfig:
    """How the one training loop runs, whatever the task."""

    out_dir: str = "runs/train"
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: cuda when available
    amp: Literal["none", "bf16", "fp16"] = "none"  # autocast dtype; fp16 adds a grad scaler (GPU only)
    channels_last: bool = False
    compile: bool = False  # torch.compile the training module (evaluation runs the plain one)
    # every BatchNorm synchronised over the processes (torch's SyncBatchNorm on GPU, splitattn's on CPU/gloo)
    sync_bn: bool = False
    seed: int = 1
    deterministic: bool = False
    resume: str = ""  # '' | 'auto' (out_dir/checkpoints/last.pth when it exists) | a checkpoint path
    overwrite: bool = False  # start afresh in an out_dir that holds a run (its checkpoints and logs are replaced)
    max_steps: int | None = None  # stop after this many optimizer steps (the schedule still spans the whole run)
    checkpoint_every_steps: int = 0  # 0: the task's period (classification: each epoch; others: the end)
    eval_every_steps: int = 0  # 0: the task's period (classification: each epoch; others: the end)
    # images per evaluation batch; 0: the task's default (classification max(batch, 256) in memory or the
    # per-process batch from folders, detection 4; segmentation evaluates one image at a time, any size)
    eval_batch_size: int = 0
    log_every_steps: int = 20
    tensorboard: bool = True  # when the tensorboard package is installed
    progress: bool = True
    # model EMA (engine/ema.py): 0 = off; else the decay β per update, EMA ← β·EMA + (1−β)·weights (timm: 0.9998)
    ema_decay: float = 0.0
    ema_warmup: bool = False  # β_k = min(ema_decay, 1 − (1 + (k−1)/gamma)^−power) for update k (timm ModelEmaV3)
    ema_warmup_gamma: float = 1.0
    ema_warmup_power: float = 2 / 3  # timm's default; 3/4 for shorter runs
    ema_every_steps: int = 1  # one EMA update every N optimizer steps
    ema_device: Literal["same", "cpu"] = "same"  # same: the training device; cpu: keeps accelerator memory free

    def rules(self) -> list[tuple[bool, str]]:
        return [
            (0.0 <= self.ema_decay < 1.0,
             f"engine.ema_decay={self.ema_decay} must be in [0, 1): 0 turns the EMA off, e.g. 0.9998 turns it on"),
            (self.ema_every_steps >= 1, "engine.ema_every_steps must be >= 1 (1: an EMA update after every step)"),
            (self.ema_warmup_gamma > 0 and self.ema_warmup_power > 0,
             "engine.ema_warmup_gamma and engine.ema_warmup_power must be > 0 (timm's defaults: 1 and 2/3)"),
            (self.checkpoint_every_steps >= 0 and self.eval_every_steps >= 0,
             "engine.checkpoint_every_steps and engine.eval_every_steps must be >= 0 (0: the task's period)"),
            (self.log_every_steps >= 1, "engine.log_every_steps must be >= 1"),
            (self.eval_batch_size >= 0, "engine.eval_batch_size must be >= 0 (0: the task's default)"),
            (self.max_steps is None or self.max_steps > 0, "engine.max_steps must be positive"),
            (not (self.overwrite and self.resume), "engine.overwrite and engine.resume exclude each other"),
        ]


@dataclass
class OptimConfig:
    """What every task's SGD shares; a task's ``optim`` section adds its schedule."""

    batch_size: int = 16  # global batch: over all processes and accumulation steps
    accum_steps: int = 1  # gradient accumulation: each process runs batch / (world · accum) at a time
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4
    grad_clip: float | None = None  # max gradient norm; None: no clipping

    def rules(self) -> list[tuple[bool, str]]:
        return [
            (self.batch_size >= 1 and self.accum_steps >= 1, "optim.batch_size and optim.accum_steps must be >= 1"),
            (self.momentum >= 0 and self.weight_decay >= 0, "optim.momentum and optim.weight_decay must be >= 0"),
            (self.grad_clip is None or self.grad_clip > 0, "optim.grad_clip must be positive (or null: off)"),
        ]


@dataclass
class TaskConfig:
    """Base of the task configs: subclasses declare ``model``, ``data``, ``optim`` (and more) before ``engine``."""

    engine: EngineConfig = field(default_factory=EngineConfig)

    def rules(self) -> list[tuple[bool, str]]:
        """Cross-field rules of the task (the sections' own rules are checked too)."""
        return []

    def check(self) -> None:
        rules = list(self.rules())
        for section in dataclasses.fields(self):
            value = getattr(self, section.name)
            if hasattr(value, "rules"):
                rules += value.rules()
        for ok, message in rules:
            if not ok:
                raise ConfigError(message)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ----------------------------------------------------------------------------- typed reading
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
    fields = {f.name: f for f in dataclasses.fields(cls)}
    names = list(fields)
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f"; did you mean '{prefix}{close[0]}'?" if close else f"; valid keys: {', '.join(names)}"
            raise ConfigError(f"unknown config key '{prefix}{key}'{hint}")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            factory = fields[key].default_factory  # a section's defaults as its config class sets them
            defaults = dataclasses.asdict(factory()) if factory is not dataclasses.MISSING else {}
            kwargs[key] = _build(tp, {**defaults, **value} if isinstance(value, dict) else value, f"{prefix}{key}.")
        else:
            kwargs[key] = _coerce(value, tp, f"{prefix}{key}")
    return cls(**kwargs)


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``['optim.lr=0.4', 'data.root=/data']`` → nested dict; values are parsed as YAML scalars."""
    tree: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not key=value (e.g. optim.lr=0.1)")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        if len(parts) < 2 or not all(parts):
            raise ConfigError(f"override key {key!r} needs a section, e.g. optim.{key} or data.{key}")
        node = tree
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r} sets a key inside {part!r}, which is not a section")
        try:
            node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            raise ConfigError(f"override {item!r}: the value is not valid YAML (quote it: {key}='{raw}')") from None
    return tree


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def read_config_data(path: str | Path | None, overrides: list[str] | None = None) -> dict[str, Any]:
    """A YAML file (may be omitted) merged with ``key=value`` overrides, as a nested dict."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist (the configs/ folder holds examples)")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{path} is not valid YAML: {err}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path} must hold a mapping of sections (model:, data:, optim:, engine:)")
    return _merge(data, parse_overrides(overrides or []))


def build_config(cls: type, data: dict[str, Any]) -> Any:
    """A checked config of ``cls`` (a :class:`TaskConfig` subclass) from a nested dict."""
    cfg = _build(cls, data, "")
    cfg.check()
    return cfg


def load_config(cls: type, path: str | Path | None = None, overrides: list[str] | None = None) -> Any:
    """Read a YAML config of ``cls`` (may be omitted), apply ``key=value`` overrides, check everything."""
    return build_config(cls, read_config_data(path, overrides))

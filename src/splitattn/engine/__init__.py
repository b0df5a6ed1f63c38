"""The one training loop every task runs on: a Trainer, hooks, checkpoints, logs, process groups, configs."""

from .config import ConfigError, EngineConfig, OptimConfig, TaskConfig, build_config, load_config
from .ema import ModelEma
from .hooks import CheckpointHook, EMAHook, EvalHook, LoggingHook, LRScheduleHook
from .loop import HookBase, RunSummary, Task, Trainer, TrainingError

__all__ = ["CheckpointHook", "ConfigError", "EMAHook", "EngineConfig", "EvalHook", "HookBase", "LRScheduleHook",
           "LoggingHook", "ModelEma", "OptimConfig", "RunSummary", "Task", "TaskConfig", "Trainer", "TrainingError",
           "build_config", "load_config"]

"""Training checkpoints of every task: one layout, found for ``resume=auto``, named when they are another task's.

A checkpoint is a dict of tensors and plain values (read back with ``weights_only=True``)::

    {"format": 2, "task": "classification" | "detection" | "segmentation", "step": int, "total_steps": int,
     "model": state_dict, "optimizer": ..., "scaler": ..., "hooks": {...}, "config": {...},
     "meta": {what rebuilding the model needs: architecture, classes, preprocessing}, "splitattn_version": str,
     "model_ema": state_dict, "ema_updates": int}   # the last two only when engine.ema_decay > 0 (engine/ema.py)

:func:`checkpoint_weights` picks the weights the eval / predict / export verbs load (``--weights model|ema``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..models.weights import CheckpointError, read_checkpoint_file

LAST, BEST = "last.pth", "best.pth"
FORMAT = 2
# the commands that write and use each task's checkpoints: a checkpoint given to another task's command is named
TASK_COMMANDS = {"classification": "splitattn", "detection": "splitattn detect", "segmentation": "splitattn segment"}


def checkpoint_task(ckpt: Any) -> str | None:
    """The task that wrote ``ckpt``, also for the layouts of splitattn 0.1 (None: not a training checkpoint)."""
    if not isinstance(ckpt, dict):
        return None
    if ckpt.get("format") == FORMAT:
        return ckpt.get("task")
    legacy = {"model_name": "classification", "detector": "detection", "segmenter": "segmentation"}
    return next((task for key, task in legacy.items() if key in ckpt), None)


def read_training_checkpoint(path: str | Path, task: str, verb: str = "eval") -> dict[str, Any]:
    """A checkpoint written by ``task``'s training; any other file is a CheckpointError naming what it is."""
    return check_training_checkpoint(read_checkpoint_file(path), path, task, verb)


def check_training_checkpoint(ckpt: Any, path: str | Path, task: str, verb: str = "eval") -> dict[str, Any]:
    """``ckpt`` (read from ``path``) if ``task``'s training wrote it; else a CheckpointError naming what it is."""
    found = checkpoint_task(ckpt)
    if found == task and ckpt.get("format") == FORMAT:
        return ckpt
    if found == task:
        raise CheckpointError(f"{path} was written by splitattn 0.1, whose checkpoint layout this version does not "
                              f"read: its weights are under 'model' (train again, or load them with "
                              f"splitattn.load_weights / the task's factory)")
    if found in TASK_COMMANDS:
        uses = f"`{TASK_COMMANDS[found]} {verb}`" if verb in ("eval", "predict") else \
            f"`{TASK_COMMANDS[found]} eval` / `predict`"
        raise CheckpointError(f"{path} is a {found} checkpoint, not a {task} one: use {uses}")
    what = "a plain state_dict" if isinstance(ckpt, dict) else f"a {type(ckpt).__name__}"
    raise CheckpointError(f"{path} is {what}, not a {task} training checkpoint (train one with "
                          f"`{TASK_COMMANDS[task]} train`)")


WEIGHTS = ("model", "ema")  # --weights: the trained model's own weights (the default) or their EMA


def checkpoint_weights(ckpt: dict[str, Any], weights: str = "model", path: str | Path = "the checkpoint") \
        -> dict[str, torch.Tensor]:
    """The state_dict of a training checkpoint's ``weights``: "model" or "ema" (a CheckpointError when the run kept no
    EMA)."""
    if weights not in WEIGHTS:
        raise ValueError(f"weights={weights!r}: choose one of {', '.join(WEIGHTS)}")
    if weights == "ema" and "model_ema" not in ckpt:
        raise CheckpointError(f"{path} holds no EMA weights (its run had engine.ema_decay=0): use --weights model, "
                              "or train with engine.ema_decay=0.9998 (say) to keep an EMA")
    return ckpt["model_ema" if weights == "ema" else "model"]


def find_resume(out_dir: Path, resume: str) -> Path | None:
    """``''`` → None; ``'auto'`` → ``last.pth`` in ``out_dir/checkpoints`` (None if there is none); else that path."""
    if not resume:
        return None
    if resume != "auto":
        path = Path(resume)
        if not path.is_file():
            raise CheckpointError(f"engine.resume={resume}: no such checkpoint file")
        return path
    last = out_dir / "checkpoints" / LAST
    return last if last.is_file() else None


def existing_run(out_dir: Path) -> list[Path]:
    """The files of an earlier run in ``out_dir`` that a fresh run would replace (checkpoints and step log)."""
    found = sorted((out_dir / "checkpoints").glob("*.pth")) if (out_dir / "checkpoints").is_dir() else []
    return found + [p for p in (out_dir / "steps.jsonl",) if p.is_file()]

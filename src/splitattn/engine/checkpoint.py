"""Training checkpoints: written atomically, read with ``weights_only=True``, found for ``resume=auto``.

A checkpoint is a dict of tensors and plain values: model and optimizer state, where the run is
(epoch, step within it, global step), the best validation top-1, the config, and what a later
``eval`` / ``predict`` needs to rebuild the model and its preprocessing (model name and arguments,
class names, normalisation, image size).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import torch

from ..models.weights import CheckpointError, read_checkpoint_file

LAST, BEST = "last.pth", "best.pth"


def atomic_save(obj: dict[str, Any], path: Path) -> None:
    """Write to a temporary file in the same folder, fsync it, rename over ``path``, fsync the folder.

    A crash or a full disk leaves the previous file untouched and no temporary file behind.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        cause = "the disk is full" if err.errno == errno.ENOSPC else str(err)
        previous = f"; the previous {path.name} is intact" if path.exists() else ""
        raise CheckpointError(f"could not write checkpoint {path}: {cause}{previous}. Free space (or choose "
                              "another engine.out_dir) and resume with engine.resume=auto") from None
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A training checkpoint (not just a state_dict), read safely."""
    ckpt = read_checkpoint_file(path)
    if not isinstance(ckpt, dict) or "model" not in ckpt or "model_name" not in ckpt:
        raise CheckpointError(f"{path} is not a splitattn training checkpoint (no 'model' / 'model_name'): "
                              "for plain weights use model.pretrained=PATH instead of resume")
    return ckpt


def find_resume(out_dir: Path, resume: str) -> Path | None:
    """``''`` → None; ``'auto'`` → ``last.pth`` in ``out_dir/checkpoints`` (it is always the furthest point;
    else the newest file there; None if none); anything else → that path."""
    if not resume:
        return None
    if resume != "auto":
        path = Path(resume)
        if not path.is_file():
            raise CheckpointError(f"engine.resume={resume}: no such checkpoint file")
        return path
    if (out_dir / "checkpoints" / LAST).is_file():
        return out_dir / "checkpoints" / LAST
    candidates = [p for p in (out_dir / "checkpoints").glob("*.pth") if p.is_file()]
    return max(candidates, key=lambda p: p.stat().st_mtime) if candidates else None

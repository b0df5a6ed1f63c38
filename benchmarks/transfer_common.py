"""What the two scenes transfer benchmarks (detection_scenes.py, segmentation_scenes.py) share: the
classification pretraining of a backbone (reused when its checkpoint exists) and the machine record."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import torch

# The paper's baseline beside ResNeSt: ResNet-D (deep stem, avg-down, radix 0) at the same (1, 1, 1, 1) depth
BACKBONES = {
    "resnest": ("resnest14", []),
    "resnetd": ("resnet50d", ["model.overrides.layers=[1,1,1,1]"]),
}


def pretrain(name: str, model: str, overrides: list[str], out_root: Path, config: str) -> tuple[Path, dict]:
    """Train ``model`` as a classifier with ``config`` under ``out_root/pretrain_<name>`` (or reuse that run):
    (best checkpoint, {"test_top1", "epochs", "wall_s", "command"})."""
    from splitattn.config import load_config
    from splitattn.engine.trainer import train

    out_dir = out_root / f"pretrain_{name}"
    args = [f"model.name={model}", *overrides, f"engine.out_dir={out_dir}"]
    summary_path = out_dir / "pretrain_summary.json"
    if summary_path.is_file() and (out_dir / "checkpoints" / "best.pth").is_file():
        return out_dir / "checkpoints" / "best.pth", json.loads(summary_path.read_text())
    summary = train(load_config(config, args))
    record = {"test_top1": summary.val_top1, "epochs": summary.epochs, "wall_s": round(summary.wall_s, 1),
              "command": " ".join(["splitattn", "train", "--config", config, *args])}
    summary_path.write_text(json.dumps(record, indent=2) + "\n")
    return out_dir / "checkpoints" / "best.pth", record


def machine() -> dict:
    return {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "date": time.strftime("%Y-%m-%d")}

"""What the two scenes transfer benchmarks (detection_scenes.py, segmentation_scenes.py) share: the
classification pretraining of a backbone (reused when the same command and config file made its checkpoint) and
the machine record."""

from __future__ import annotations

import hashlib
import json
import platform
import time
from pathlib import Path

import torch

# --smoke: a few scenes and a one-epoch pretraining on a subset, to check a benchmark runs end to end
SMOKE_SCENES = {"num_train": 16, "num_val": 8, "size": 96}
SMOKE_PRETRAIN = ["data.train_subset=2048", "data.val_subset=512", "optim.epochs=1", "engine.compile=false"]

# The paper's baseline beside ResNeSt: ResNet-D (deep stem, avg-down, radix 0) at the same (1, 1, 1, 1) depth
BACKBONES = {
    "resnest": ("resnest14", []),
    "resnetd": ("resnet50d", ["model.overrides.layers=[1,1,1,1]"]),
}


def pretrain(name: str, model: str, overrides: list[str], out_root: Path, config: str) -> tuple[Path, dict]:
    """Train ``model`` as a classifier with ``config`` under ``out_root/pretrain_<name>`` (or reuse that run):
    (best checkpoint, {"test_top1", "epochs", "wall_s", "command", "config_sha256"}).

    A run is reused only when its record holds the same command and the same config file's bytes (sha256): an
    edited recipe (say, more epochs) trains again instead of silently reusing the old checkpoint. Code defaults
    are not hashed, and records from before the hash (no ``config_sha256``) train again. A stopped run (SIGINT /
    SIGTERM) leaves no record. A ``scenes:`` section in ``config`` (scenes/experiments.py) draws the images in
    the scenes' look (scenes/pretraining.py)."""
    from splitattn.classification import ClassificationConfig, ClassificationTask
    from splitattn.engine import Trainer
    from splitattn.engine.distributed import shutdown_distributed

    from .scenes.experiments import read_benchmark_config
    from .scenes.pretraining import SceneStyleOptions, scene_style_data

    out_dir = out_root / f"pretrain_{name}"
    args = [f"model.name={model}", *overrides, f"engine.out_dir={out_dir}", "engine.overwrite=true"]
    command = " ".join(["benchmarks/transfer_common.py pretrain", "--config", config, *args])
    config_sha256 = hashlib.sha256(Path(config).read_bytes()).hexdigest()
    summary_path = out_dir / "pretrain_summary.json"
    if summary_path.is_file() and (out_dir / "checkpoints" / "best.pth").is_file():
        record = json.loads(summary_path.read_text())
        if record.get("command") == command and record.get("config_sha256") == config_sha256:
            return out_dir / "checkpoints" / "best.pth", record
        print(f"{out_dir}: made by another command or config version, training again")
    cfg, options = read_benchmark_config(ClassificationConfig, config, args)
    data = None
    if options.style or options.resize or options.occluders or options.erasing or options.zoom != [1.0, 1.0]:
        style = SceneStyleOptions(options.style, options.resize, options.zoom, options.occluders, options.erasing)
        data = scene_style_data(cfg, style, cfg.optim.batch_size)
    try:
        summary = Trainer(ClassificationTask(cfg, data)).train()
    finally:
        shutdown_distributed()
    if summary.stopped:  # a record would make the next run reuse a half-trained checkpoint
        raise SystemExit(f"pretraining of {name} stopped ({summary.stopped}): run the benchmark again "
                         "(it trains this backbone from the start)")
    record = {"test_top1": summary.metrics.get("val_top1"), "epochs": cfg.optim.epochs, "steps": summary.step,
              "wall_s": round(summary.wall_s, 1), "command": command, "config_sha256": config_sha256}
    summary_path.write_text(json.dumps(record, indent=2) + "\n")
    return out_dir / "checkpoints" / "best.pth", record


def machine() -> dict:
    return {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "date": time.strftime("%Y-%m-%d")}

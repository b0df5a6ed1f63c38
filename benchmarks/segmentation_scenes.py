"""Segmentation benchmark on the Fashion-MNIST scenes: DeepLabV3 (OS 8, aux) with a compact ResNeSt, and
the same run with the ResNet-D baseline (radix 0, no avd; same depth, widths, stem, heads, schedule).

    .venv/bin/python benchmarks/segmentation_scenes.py         # about 2 × 15 min on 2 cores

Writes benchmarks/results/segmentation_scenes.json (pixAcc and mIoU single-scale and multi-scale + flip,
wall times, parameter counts, the commands) and copies each run's overlays and curves next to it.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import time
from pathlib import Path

import torch

from splitattn.data.scenes import make_scenes
from splitattn.segmentation import create_segmenter
from splitattn.segmentation.config import load_segment_config
from splitattn.segmentation.data import build_segmentation_data
from splitattn.segmentation.evaluate import evaluate_segmenter
from splitattn.segmentation.train import load_segmenter_checkpoint, train_segmenter

CONFIG = "configs/segmentation/scenes_deeplabv3_cpu.yaml"
BACKBONES = {
    "resnest": [],
    "resnetd": ["model.backbone=resnet50d", "model.overrides.layers=[1,1,1,1]"],
}


def run(name: str, overrides: list[str], scenes: Path, out_root: Path, results: Path) -> dict:
    args = [f"data.root={scenes}", *overrides, f"engine.out_dir={out_root / name}", "eval.final_scales=false"]
    cfg = load_segment_config(CONFIG, args)
    params = sum(p.numel() for p in create_segmenter(**cfg.model.segmenter_kwargs(11, progress=False)).parameters())
    summary = train_segmenter(cfg)
    for key in ("predictions", "curves"):
        if key in summary.files:
            shutil.copy(summary.files[key], results / f"segmentation_scenes_{name}_{key}.png")
    # the paper's protocol on top of the single-scale figure: scales 0.5-1.75 + flip
    model, _ = load_segmenter_checkpoint(summary.files["checkpoint"])
    _, val_set = build_segmentation_data(cfg.data, train=False)
    started = time.time()
    multi = evaluate_segmenter(model, val_set, torch.device("cpu"), scales=tuple(cfg.eval.scales), flip=True,
                               crop_size=cfg.data.crop_size, base_size=cfg.data.base_size, amp=cfg.engine.amp)
    return {"backbone": cfg.model.backbone, "overrides": cfg.model.overrides, "params_total": params,
            "iterations": summary.iterations, "train_wall_s": round(summary.train_s, 1),
            "single_scale": {k: summary.metrics[k] for k in ("pixAcc", "mIoU")},
            "multi_scale_flip": {"pixAcc": multi["pixAcc"], "mIoU": multi["mIoU"],
                                 "scales": list(cfg.eval.scales), "eval_s": round(time.time() - started, 1)},
            "per_class_iou_single_scale": {k: v for k, v in summary.metrics.items() if k.startswith("IoU")},
            "stopped": summary.stopped,
            "command": " ".join(["splitattn", "segment", "train", "--config", CONFIG, *args])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", default="datasets/scenes", help="scene set (made here if missing)")
    parser.add_argument("--runs", default="runs/benchmark_segmentation", help="training output folders")
    parser.add_argument("--only", choices=sorted(BACKBONES), help="run one backbone only")
    parser.add_argument("--json", default="benchmarks/results/segmentation_scenes.json")
    args = parser.parse_args()
    scenes = Path(args.scenes)
    scene_summary = make_scenes(scenes, progress=False)  # defaults: 2000 train / 500 val, 128 px, seed 0
    results = Path(args.json).parent
    results.mkdir(parents=True, exist_ok=True)
    report = {"benchmark": "DeepLabV3 (OS 8, aux) on Fashion-MNIST scenes, CPU preset",
              "scenes": {k: v["images"] for k, v in scene_summary["splits"].items()},
              "machine": {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                          "torch": torch.__version__, "date": time.strftime("%Y-%m-%d")},
              "runs": {}}
    for name, overrides in BACKBONES.items():
        if args.only and name != args.only:
            continue
        report["runs"][name] = run(name, overrides, scenes, Path(args.runs), results)
        print(json.dumps({name: report["runs"][name]["single_scale"]}), file=sys.stderr)
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    for name, result in report["runs"].items():
        single, multi = result["single_scale"], result["multi_scale_flip"]
        print(f"{name:>8}: mIoU {single['mIoU']:.4f} (MS+flip {multi['mIoU']:.4f}), pixAcc {single['pixAcc']:.4f}, "
              f"{result['params_total'] / 1e6:.2f} M params, training {result['train_wall_s'] / 60:.1f} min")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()

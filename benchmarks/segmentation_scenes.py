"""Segmentation benchmark on the Fashion-MNIST scenes: DeepLabV3+ (aux head) with a compact ResNeSt, and the
same run with the ResNet-D baseline (radix 0, no avd; same depth, widths, stem, heads and schedule).

As the paper fine-tunes ImageNet-pretrained backbones on photos of the same kind, each backbone is first
trained as a classifier on the Fashion-MNIST *training* images drawn in the scenes' look
(benchmarks/configs/fashion_mnist_scenes_style.yaml; the validation scenes hold only test images, so
nothing leaks), then fine-tuned as DeepLabV3+ with the benchmark preset (benchmarks/configs/scenes_deeplabv3_cpu.yaml:
the library's segmentation task plus the class-prior start, the time budget and the refinement of benchmarks/scenes).

    .venv/bin/python -m benchmarks.segmentation_scenes   # 1.5-2.5 h on 2 cores: pretraining 26-65 min
                          # (ResNeSt) and 17-27 min (ResNet-D), segmentation 2 × 14.5 min, MS + flip + refine 2 × 10 min
    .venv/bin/python -m benchmarks.segmentation_scenes --only resnetd   # one backbone; the other's record stays
    .venv/bin/python -m benchmarks.segmentation_scenes --smoke   # minutes: tiny everything, nothing recorded

The JSON is rewritten after each backbone, so an interrupted run keeps the backbones it finished.

Writes benchmarks/results/segmentation_scenes.json (pixAcc and mIoU single-scale, multi-scale + flip, and
multi-scale + flip with the preset's colour-guided refinement; per-class IoU, wall times of both stages,
parameter counts, the commands) and copies each run's overlays and curves next to it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import time
from pathlib import Path

from splitattn.engine import Trainer
from splitattn.engine.distributed import shutdown_distributed
from splitattn.segmentation import create_segmenter
from splitattn.segmentation.config import SegmentConfig
from splitattn.segmentation.data import build_segmentation_data
from splitattn.segmentation.task import load_segmenter_checkpoint

from .scenes.experiments import ScenesSegmentationTask, TimeBudgetHook, evaluate_refined, read_benchmark_config
from .scenes.generator import make_scenes
from .transfer_common import BACKBONES, SMOKE_PRETRAIN, SMOKE_SCENES, machine, pretrain

CONFIG = "benchmarks/configs/scenes_deeplabv3_cpu.yaml"
PRETRAIN_CONFIG = "benchmarks/configs/fashion_mnist_scenes_style.yaml"
SMOKE = ["optim.max_iters=4", "optim.batch_size=2", "data.base_size=96", "data.crop_size=96", "engine.compile=false",
         "scenes.time_budget_min=0", "scenes.refine_steps=2", "eval.scales=[1.0]"]


def run(name: str, model: str, overrides: list[str], scenes: Path, out_root: Path, results: Path,
        smoke: bool = False) -> dict:
    checkpoint, pretrained = pretrain(name, model, overrides + (SMOKE_PRETRAIN if smoke else []), out_root,
                                      PRETRAIN_CONFIG)
    args = [f"data.root={scenes}", f"model.backbone={model}", f"model.pretrained_backbone={checkpoint}", *overrides,
            f"engine.out_dir={out_root / name}", "engine.overwrite=true", "eval.final_scales=false",
            *(SMOKE if smoke else [])]
    cfg, options = read_benchmark_config(SegmentConfig, CONFIG, args)
    params = sum(p.numel() for p in create_segmenter(**{**cfg.model.segmenter_kwargs(11, progress=False),
                                                        "pretrained_backbone": False}).parameters())
    budget = [TimeBudgetHook(options.time_budget_min)] if options.time_budget_min else []
    started = time.time()
    try:
        summary = Trainer(ScenesSegmentationTask(cfg, options), hooks=budget).train()
    finally:
        shutdown_distributed()
    train_wall = time.time() - started
    for key in ("predictions", "curves"):
        if key in summary.files:
            shutil.copy(summary.files[key], results / f"segmentation_scenes_{name}_{key}.png")
    # the paper's protocol on top of the single-scale figure: scales 0.5-1.75 + flip; in the same pass, the
    # preset's colour-guided refinement of that prediction (not the paper's protocol)
    segmenter, _ = load_segmenter_checkpoint(summary.files["last"])
    _, val_set = build_segmentation_data(cfg.data, train=False)
    started, refine = time.time(), options.refiner()
    multi = evaluate_refined(segmenter, val_set, refine, tuple(cfg.eval.scales), True, cfg.eval.window(cfg.data),
                             cfg.data.base_size, cfg.engine.amp)
    return {"pretraining": pretrained, "backbone": cfg.model.backbone, "overrides": cfg.model.overrides,
            "params_total": params, "iterations": summary.step, "train_wall_s": round(train_wall, 1),
            "single_scale": {k: summary.metrics[k] for k in ("pixAcc", "mIoU")},
            "multi_scale_flip": {"pixAcc": multi["pixAcc"], "mIoU": multi["mIoU"], "scales": list(cfg.eval.scales)},
            "multi_scale_flip_refined": {"pixAcc": multi["refined"]["pixAcc"], "mIoU": multi["refined"]["mIoU"],
                                         "refine": dataclasses.asdict(refine)},
            "multi_scale_flip_eval_s": round(time.time() - started, 1),
            "per_class_iou_single_scale": {k[4:]: v for k, v in summary.metrics.items() if k.startswith("IoU/")},
            "per_class_iou_multi_scale_flip_refined": multi["refined"]["iou"],
            "stopped": summary.stopped,
            "command": " ".join(["python -m benchmarks.segmentation_scenes", "--config", CONFIG, *args])}


def write_report(report: dict, path: Path) -> None:
    """Write ``report`` atomically, with the ResNeSt - ResNet-D differences for the protocols both runs hold (a
    record from before the refinement has no refined figure)."""
    runs = report["runs"]
    report.pop("resnest_minus_resnetd", None)
    if len(runs) == 2:
        shared = [p for p in ("single_scale", "multi_scale_flip", "multi_scale_flip_refined")
                  if all(p in record for record in runs.values())]
        report["resnest_minus_resnetd"] = {
            protocol: {k: round(runs["resnest"][protocol][k] - runs["resnetd"][protocol][k], 4)
                       for k in ("mIoU", "pixAcc")} for protocol in shared}
    partial = path.with_suffix(".json.partial")
    partial.write_text(json.dumps(report, indent=2) + "\n")
    partial.replace(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", default="datasets/scenes", help="scene set (made here if missing)")
    parser.add_argument("--runs", default="runs/benchmark_segmentation", help="training output folders")
    parser.add_argument("--only", choices=sorted(BACKBONES), help="run one backbone only")
    parser.add_argument("--json", default="benchmarks/results/segmentation_scenes.json")
    parser.add_argument("--smoke", action="store_true", help="tiny scenes, pretraining and training; no record")
    args = parser.parse_args()
    if args.smoke:
        args.scenes, args.runs, args.json = (f"{args.runs}_smoke/scenes", f"{args.runs}_smoke",
                                             f"{args.runs}_smoke/segmentation_scenes.json")
    scenes = Path(args.scenes)
    # defaults: 2000 train / 500 val, 128 px, seed 0
    scene_summary = make_scenes(scenes, progress=False, **(SMOKE_SCENES if args.smoke else {}))
    results = Path(args.json).parent
    results.mkdir(parents=True, exist_ok=True)
    report = {"benchmark": "DeepLabV3+ on Fashion-MNIST scenes, CPU preset, backbone pretrained on scene-style "
                           "Fashion-MNIST training images",
              "scenes": {k: v["images"] for k, v in scene_summary["splits"].items()},
              "machine": machine(), "runs": {}}
    if args.only and Path(args.json).is_file():  # keep the other backbone's run from an earlier call
        report["runs"] = json.loads(Path(args.json).read_text()).get("runs", {})
    for name, (model, overrides) in BACKBONES.items():
        if args.only and name != args.only:
            continue
        report["runs"][name] = run(name, model, overrides, scenes, Path(args.runs), results, args.smoke)
        print(json.dumps({name: report["runs"][name]["single_scale"]}), file=sys.stderr)
        write_report(report, Path(args.json))  # a later backbone's failure or Ctrl-C keeps this one
    for name, result in report["runs"].items():
        single, multi = result["single_scale"], result["multi_scale_flip"]
        refined = result.get("multi_scale_flip_refined", {}).get("mIoU", float("nan"))  # older records lack it
        print(f"{name:>8}: mIoU {single['mIoU']:.4f} (MS+flip {multi['mIoU']:.4f}, refined {refined:.4f}), "
              f"pixAcc {single['pixAcc']:.4f}, "
              f"{result['params_total'] / 1e6:.2f} M params, segmentation training {result['train_wall_s'] / 60:.1f} "
              f"min after {result['pretraining']['wall_s'] / 60:.1f} min of pretraining "
              f"({result['pretraining']['test_top1']:.2f} % scene-style Fashion-MNIST top-1)")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()

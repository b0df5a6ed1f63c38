"""Segmentation benchmark on the Fashion-MNIST scenes: DeepLabV3 (aux head) with a compact ResNeSt, and the
same run with the ResNet-D baseline (radix 0, no avd; same depth, widths, stem, heads and schedule).

As the paper fine-tunes ImageNet-pretrained backbones on photos of the same kind, each backbone is first
trained as a classifier on the Fashion-MNIST *training* images drawn in the scenes' look
(configs/fashion_mnist/resnest_cpu_scenes_style.yaml; the validation scenes hold only test images, so
nothing leaks), then fine-tuned as DeepLabV3 with the CPU preset (configs/segmentation/scenes_deeplabv3_cpu.yaml).

    .venv/bin/python benchmarks/segmentation_scenes.py   # 1.5-2.5 h on 2 cores: pretraining 26-65 min
                          # (ResNeSt) and 17-27 min (ResNet-D), segmentation 2 × 14.5 min, MS + flip + refine 2 × 10 min
    .venv/bin/python benchmarks/segmentation_scenes.py --only resnetd   # one backbone; the other's record stays

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

import torch
from transfer_common import BACKBONES, machine, pretrain

from splitattn.data.scenes import make_scenes
from splitattn.segmentation import create_segmenter
from splitattn.segmentation.config import load_segment_config
from splitattn.segmentation.data import build_segmentation_data
from splitattn.segmentation.evaluate import evaluate_segmenter
from splitattn.segmentation.train import load_segmenter_checkpoint, train_segmenter

CONFIG = "configs/segmentation/scenes_deeplabv3_cpu.yaml"
PRETRAIN_CONFIG = "configs/fashion_mnist/resnest_cpu_scenes_style.yaml"


def run(name: str, model: str, overrides: list[str], scenes: Path, out_root: Path, results: Path) -> dict:
    checkpoint, pretrained = pretrain(name, model, overrides, out_root, PRETRAIN_CONFIG)
    args = [f"data.root={scenes}", f"model.backbone={model}", f"model.pretrained_backbone={checkpoint}", *overrides,
            f"engine.out_dir={out_root / name}", "eval.final_scales=false"]
    cfg = load_segment_config(CONFIG, args)
    params = sum(p.numel() for p in create_segmenter(**{**cfg.model.segmenter_kwargs(11, progress=False),
                                                        "pretrained_backbone": False}).parameters())
    summary = train_segmenter(cfg)
    for key in ("predictions", "curves"):
        if key in summary.files:
            shutil.copy(summary.files[key], results / f"segmentation_scenes_{name}_{key}.png")
    # the paper's protocol on top of the single-scale figure: scales 0.5-1.75 + flip; in the same pass, the
    # preset's colour-guided refinement of that prediction (not the paper's protocol)
    segmenter, _ = load_segmenter_checkpoint(summary.files["checkpoint"])
    _, val_set = build_segmentation_data(cfg.data, train=False)
    started, refine = time.time(), cfg.eval.refiner()
    multi = evaluate_segmenter(segmenter, val_set, torch.device("cpu"), scales=tuple(cfg.eval.scales), flip=True,
                               crop_size=cfg.eval.window(cfg.data), base_size=cfg.data.base_size, amp=cfg.engine.amp,
                               refine=refine)
    return {"pretraining": pretrained, "backbone": cfg.model.backbone, "overrides": cfg.model.overrides,
            "params_total": params, "iterations": summary.iterations, "train_wall_s": round(summary.train_s, 1),
            "single_scale": {k: summary.metrics[k] for k in ("pixAcc", "mIoU")},
            "multi_scale_flip": {"pixAcc": multi["pixAcc_unrefined"], "mIoU": multi["mIoU_unrefined"],
                                 "scales": list(cfg.eval.scales)},
            "multi_scale_flip_refined": {"pixAcc": multi["pixAcc"], "mIoU": multi["mIoU"],
                                         "refine": dataclasses.asdict(refine)},
            "multi_scale_flip_eval_s": round(time.time() - started, 1),
            "per_class_iou_single_scale": {k[4:]: v for k, v in summary.metrics.items() if k.startswith("IoU/")},
            "per_class_iou_multi_scale_flip_refined": {k[4:]: v for k, v in multi.items() if k.startswith("IoU/")},
            "stopped": summary.stopped,
            "command": " ".join(["splitattn", "segment", "train", "--config", CONFIG, *args])}


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
    args = parser.parse_args()
    scenes = Path(args.scenes)
    scene_summary = make_scenes(scenes, progress=False)  # defaults: 2000 train / 500 val, 128 px, seed 0
    results = Path(args.json).parent
    results.mkdir(parents=True, exist_ok=True)
    report = {"benchmark": "DeepLabV3 on Fashion-MNIST scenes, CPU preset, backbone pretrained on scene-style "
                           "Fashion-MNIST training images",
              "scenes": {k: v["images"] for k, v in scene_summary["splits"].items()},
              "machine": machine(), "runs": {}}
    if args.only and Path(args.json).is_file():  # keep the other backbone's run from an earlier call
        report["runs"] = json.loads(Path(args.json).read_text()).get("runs", {})
    for name, (model, overrides) in BACKBONES.items():
        if args.only and name != args.only:
            continue
        report["runs"][name] = run(name, model, overrides, scenes, Path(args.runs), results)
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

"""Detection benchmark on the Fashion-MNIST scenes: the CPU preset with a compact ResNeSt, and the same
run with the ResNet-D baseline (radix 0, no avd; same depth, widths, stem, heads and schedule).

As the paper fine-tunes ImageNet-pretrained backbones, each backbone is first trained as a classifier on
the Fashion-MNIST training images (the `make demo` recipe, configs/fashion_mnist/resnest_cpu.yaml; the
validation scenes use the test images, so nothing leaks), then fine-tuned as Mask R-CNN on the scenes
with the CPU preset benchmarks/configs/scenes_mask_rcnn_cpu.yaml.

    .venv/bin/python -m benchmarks.detection_scenes     # ~2 × (8.5 min pretraining + 15 min detection)
    .venv/bin/python -m benchmarks.detection_scenes --smoke   # a minute: tiny everything, nothing recorded

Writes benchmarks/results/detection_scenes.json (pycocotools bbox and segm AP, wall times of both stages,
parameter counts, the commands) and copies each run's prediction overlays and curves next to it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from splitattn.detection.config import load_detect_config
from splitattn.detection.factory import detector_parameters
from splitattn.detection.task import train_detector

from .scenes.generator import make_scenes
from .transfer_common import BACKBONES, SMOKE_PRETRAIN, SMOKE_SCENES, machine, pretrain

CONFIG = "benchmarks/configs/scenes_mask_rcnn_cpu.yaml"
PRETRAIN_CONFIG = "configs/fashion_mnist/resnest_cpu.yaml"  # the `make demo` recipe (plain Fashion-MNIST)
SMOKE = ["optim.max_iters=4", "optim.steps=[3]", "optim.warmup_iters=1", "optim.batch_size=2",
         "model.train_sizes=[96,96]", "model.test_size=96"]


def run(name: str, model: str, overrides: list[str], scenes: Path, out_root: Path, results: Path,
        smoke: bool = False) -> dict:
    checkpoint, pretrained = pretrain(name, model, overrides + (SMOKE_PRETRAIN if smoke else []), out_root,
                                      PRETRAIN_CONFIG)
    overrides = [f"model.backbone={model}", f"model.pretrained_backbone={checkpoint}", *overrides]
    data = [f"data.train_images={scenes}/train/images", f"data.train_annotations={scenes}/train/annotations.json",
            f"data.val_images={scenes}/val/images", f"data.val_annotations={scenes}/val/annotations.json"]
    args = data + overrides + [f"engine.out_dir={out_root / name}", "engine.overwrite=true"] + (SMOKE if smoke else [])
    cfg = load_detect_config(CONFIG, args)
    trainable, total = detector_parameters(_model(cfg))
    started = time.time()
    summary = train_detector(cfg)
    wall = time.time() - started
    for key in ("predictions", "curves"):
        if key in summary.files:
            shutil.copy(summary.files[key], results / f"detection_scenes_{name}_{key}.png")
    return {"pretraining": pretrained, "backbone": cfg.model.backbone, "overrides": cfg.model.overrides,
            "kind": cfg.model.kind,
            "params_total": total, "params_trainable": trainable, "iterations": summary.step,
            "wall_s_with_eval": round(wall, 1),
            "metrics": summary.metrics, "stopped": summary.stopped,
            "command": " ".join(["splitattn", "detect", "train", "--config", CONFIG, *args])}


def _model(cfg):
    from splitattn.detection import create_detector

    return create_detector(**cfg.model.detector_kwargs(11, progress=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", default="datasets/scenes", help="scene set (made here if missing)")
    parser.add_argument("--runs", default="runs/benchmark_detection", help="training output folders")
    parser.add_argument("--only", choices=sorted(BACKBONES), help="run one backbone only")
    parser.add_argument("--json", default="benchmarks/results/detection_scenes.json")
    parser.add_argument("--smoke", action="store_true", help="tiny scenes, pretraining and training; no record")
    args = parser.parse_args()
    if args.smoke:
        args.scenes, args.runs, args.json = (f"{args.runs}_smoke/scenes", f"{args.runs}_smoke",
                                             f"{args.runs}_smoke/detection_scenes.json")
    scenes = Path(args.scenes)
    # the defaults: 2000 train / 500 val, 128 px, seed 0
    scene_summary = make_scenes(scenes, progress=False, **(SMOKE_SCENES if args.smoke else {}))
    results = Path(args.json).parent
    results.mkdir(parents=True, exist_ok=True)
    report = {"benchmark": "Mask R-CNN on Fashion-MNIST scenes, CPU preset, backbone pretrained on Fashion-MNIST",
              "scenes": {k: {"images": v["images"], "instances": v["instances"]}
                         for k, v in scene_summary["splits"].items()},
              "machine": machine(),
              "runs": {}}
    if args.only and Path(args.json).is_file():  # keep the other backbone's run from an earlier call
        report["runs"] = json.loads(Path(args.json).read_text()).get("runs", {})
    for name, (model, overrides) in BACKBONES.items():
        if args.only and name != args.only:
            continue
        report["runs"][name] = run(name, model, overrides, scenes, Path(args.runs), results, args.smoke)
        print(json.dumps({name: report["runs"][name]["metrics"]}, indent=1), file=sys.stderr)
    runs = report["runs"]
    if len(runs) == 2:
        report["resnest_minus_resnetd"] = {k: round(runs["resnest"]["metrics"][k] - runs["resnetd"]["metrics"][k], 4)
                                           for k in ("bbox_AP", "bbox_AP50", "segm_AP")}
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    for name, result in runs.items():
        m = result["metrics"]
        print(f"{name:>8}: bbox AP {m['bbox_AP']:.4f} (AP50 {m['bbox_AP50']:.4f}), segm AP {m['segm_AP']:.4f}, "
              f"{result['params_total'] / 1e6:.2f} M params, detection {result['wall_s_with_eval'] / 60:.1f} min "
              f"after {result['pretraining']['wall_s'] / 60:.1f} min of pretraining "
              f"({result['pretraining']['test_top1']:.2f} % Fashion-MNIST top-1)")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()

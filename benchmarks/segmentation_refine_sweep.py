"""How the scenes preset's colour-guided refinement (scenes/refine.py) was chosen: a trained segmenter's
single-scale mIoU on *training* scenes (never the validation ones the benchmark reports) for a grid of colour and
spatial sigmas and step counts.

    .venv/bin/python -m benchmarks.segmentation_refine_sweep --checkpoint runs/scenes_deeplabv3/checkpoints/last.pth

Writes benchmarks/results/segmentation_refine_sweep.json; 2.5 minutes on 2 cores for 100 scenes.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from tqdm import tqdm

from splitattn.engine.loop import autocast
from splitattn.segmentation.config import segment_config_from_dict
from splitattn.segmentation.data import build_segmentation_data
from splitattn.segmentation.metrics import ConfusionMatrix
from splitattn.segmentation.task import load_segmenter_checkpoint

from .scenes.refine import bilateral_refine

WINDOW = 11
SIGMAS_XY = (3.0, 5.0)
SIGMAS_RGB = (0.01, 0.03, 0.05)
STEPS = (8, 16, 32)  # cumulative: each step applies the same image-dependent averaging again


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="a scenes segmenter (runs/…/checkpoints/last.pth)")
    parser.add_argument("--scenes", default="datasets/scenes")
    parser.add_argument("--split", default="train", help="scenes split to tune on (default train)")
    parser.add_argument("--images", type=int, default=100, help="the split's first N images")
    parser.add_argument("--json", default="benchmarks/results/segmentation_refine_sweep.json")
    args = parser.parse_args()
    started = time.time()
    model, ckpt = load_segmenter_checkpoint(args.checkpoint)
    cfg = segment_config_from_dict(ckpt["config"])
    cfg.data.root, cfg.data.val_split = args.scenes, args.split
    _, dataset = build_segmentation_data(cfg.data, train=False)
    samples = []
    with torch.no_grad():
        for index in tqdm(range(min(args.images, len(dataset))), desc="predict"):
            image, label = dataset[index]
            with autocast(torch.device("cpu"), cfg.engine.amp):  # as the training run evaluates
                logits = model(image[None])["out"][0]
            samples.append((image, logits.float().softmax(0), label))
    plain = ConfusionMatrix(dataset.num_classes, dataset.ignore_index)
    for _, probs, label in samples:
        plain.update(probs.argmax(0), label)
    results = []
    grid = [(xy, rgb) for xy in SIGMAS_XY for rgb in SIGMAS_RGB]
    for sigma_xy, sigma_rgb in tqdm(grid, desc="grid"):
        matrices = {steps: ConfusionMatrix(dataset.num_classes, dataset.ignore_index) for steps in STEPS}
        for image, probs, label in samples:
            done = 0
            for steps in STEPS:
                probs = bilateral_refine(probs, image, steps - done, WINDOW, sigma_xy, sigma_rgb)
                done = steps
                matrices[steps].update(probs.argmax(0), label)
        results.append({"window": WINDOW, "sigma_xy": sigma_xy, "sigma_rgb": sigma_rgb,
                        "mIoU_by_steps": {str(s): round(m.mean_iou(), 4) for s, m in matrices.items()}})
        print(json.dumps(results[-1]), flush=True)
    best = max(results, key=lambda r: max(r["mIoU_by_steps"].values()))
    report = {"checkpoint": args.checkpoint, "split": args.split, "images": len(samples),
              "protocol": "single-scale", "mIoU_unrefined": round(plain.mean_iou(), 4), "grid": results,
              "best": best, "wall_s": round(time.time() - started, 1)}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    print(f"unrefined mIoU {report['mIoU_unrefined']:.4f}; best {best}; wrote {args.json}")


if __name__ == "__main__":
    main()

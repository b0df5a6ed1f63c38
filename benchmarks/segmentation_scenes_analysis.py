"""Where the scenes segmentation loses its mIoU: the figures behind benchmarks/README.md ("CPU preset", "What
limits it"), measured on the validation scenes.

1. Label-resolution bound: the true label maps, area-averaged to r × r and bilinearly upsampled back, score
   this mIoU; a head that reads an r × r map can do no better (why the preset uses DeepLabV3+'s stride-4 decoder).
2. Classifiers on the scenes' garments: each visible garment is cut out of its scene at the square where the
   generator placed it (occluders included), resized to the classifier's input and classified. Shows how far a
   pretraining transfers before any fine-tuning (the plain `make demo` classifier vs the scene-style one).
3. A trained segmenter: confusion-matrix oracles (mIoU if garment classes were never confused with each
   other; if garments and background were never confused), where garment pixels go, and per garment the
   most-voted garment class over its visible mask (instance recognition), the share of its pixels right, and the
   mIoU if each garment whose most-voted class is wrong had its garment-labelled pixels renamed to its class.

    .venv/bin/python -m benchmarks.segmentation_scenes_analysis \
        --classifier plain=runs/fashion_mnist_cpu/checkpoints/best.pth \
        --classifier scene_style=runs/benchmark_segmentation/pretrain_resnest/checkpoints/best.pth \
        --classifier scene_style_32_epochs=runs/fm_style_32ep/checkpoints/best.pth \
        --classifier scene_style_16_epochs=runs/fm_style_16ep/checkpoints/best.pth \
        --classifier scene_style_16_epochs_occluders=runs/fm_occ3/checkpoints/best.pth \
        --segmenter runs/benchmark_segmentation/resnest/checkpoints/last.pth

The checkpoints come from `make demo` (plain) and benchmarks/segmentation_scenes.py (scene_style and the
segmenter; the recorded analysis ran on the 2026-11-30 benchmark: 64-epoch pretraining then, 48 since).
The others are the same pretraining with fewer epochs, one with occluders (the runs are deterministic; the 16-
and 32-epoch ones are bit for bit the benchmark's `pretrain_resnest` when its recipe had 16 and 32 epochs), made
with benchmarks/transfer_common.py's `pretrain` from benchmarks/configs/fashion_mnist_scenes_style.yaml with
`optim.epochs=32` (scene_style_32_epochs), `optim.epochs=16` (scene_style_16_epochs), and that one with
`scenes.occluders=3` (scene_style_16_epochs_occluders); the recorded figures predate the engine rewrite.

Writes benchmarks/results/segmentation_scenes_analysis.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from pycocotools import mask as mask_utils

from splitattn.classification.inference import load_predictor
from splitattn.engine.loop import autocast
from splitattn.segmentation.metrics import ConfusionMatrix
from splitattn.segmentation.task import load_segmenter_checkpoint
from splitattn.segmentation.visualize import predict_labels

from .transfer_common import machine

NUM_CLASSES = 11  # background + the 10 Fashion-MNIST classes


def load_split(root: Path) -> tuple[dict[int, Path], dict[int, list[dict]]]:
    """(image id → image file, image id → its annotations) of one scenes split."""
    coco = json.loads((root / "annotations.json").read_text())
    files = {image["id"]: root / "images" / image["file_name"] for image in coco["images"]}
    objects = defaultdict(list)
    for annotation in coco["annotations"]:
        objects[annotation["image_id"]].append(annotation)
    return files, objects


def semantic_map(image_file: Path) -> torch.Tensor:
    return torch.from_numpy(np.array(Image.open(image_file.parent.parent / "semantic" / image_file.name))).long()


def resolution_bound(files: dict[int, Path], sides: list[int]) -> dict[str, float]:
    matrices = {side: ConfusionMatrix(NUM_CLASSES) for side in sides}
    for image_file in files.values():
        label = semantic_map(image_file)
        onehot = F.one_hot(label, NUM_CLASSES).permute(2, 0, 1).float()[None]
        for side, matrix in matrices.items():
            coarse = F.adaptive_avg_pool2d(onehot, side)
            matrix.update(F.interpolate(coarse, size=label.shape, mode="bilinear", align_corners=False)[0].argmax(0),
                          label)
    return {str(side): round(matrix.mean_iou(), 4) for side, matrix in matrices.items()}


def crop_accuracy(checkpoint: str, files: dict[int, Path], objects: dict[int, list[dict]]) -> dict:
    predictor = load_predictor(checkpoint)
    hits, per_class = [], defaultdict(list)
    for image_id, garments in objects.items():
        scene = Image.open(files[image_id]).convert("RGB")
        for annotation in garments:
            s = annotation["source"]
            crop = scene.crop((s["x"], s["y"], s["x"] + s["size"], s["y"] + s["size"]))
            with torch.no_grad():
                predicted = int(predictor.model(predictor.transform(crop)[None]).argmax(1))
            hit = predicted == annotation["category_id"] - 1
            hits.append(hit)
            per_class[predictor.classes[annotation["category_id"] - 1]].append(hit)
    return {"checkpoint": checkpoint, "crops": len(hits), "top1": round(float(np.mean(hits)), 4),
            "per_class_top1": {name: round(float(np.mean(v)), 4) for name, v in per_class.items()}}


def oracle_miou(matrix: torch.Tensor, merge) -> float:
    """mIoU after moving each confusion that ``merge(target, predicted)`` forgives onto the diagonal."""
    fixed = matrix.clone()
    for t in range(NUM_CLASSES):
        for p in range(NUM_CLASSES):
            if t != p and merge(t, p):
                fixed[t, t] += fixed[t, p]
                fixed[t, p] = 0
    iou = fixed.diag() / (fixed.sum(0) + fixed.sum(1) - fixed.diag())
    return round(float(iou.nanmean()), 4)


def segmenter_errors(checkpoint: str, files: dict[int, Path], objects: dict[int, list[dict]]) -> dict:
    model, _ = load_segmenter_checkpoint(checkpoint)
    matrix, recognised = ConfusionMatrix(NUM_CLASSES), ConfusionMatrix(NUM_CLASSES)
    majority, pixel_share = [], []
    for image_id, image_file in files.items():
        image = torch.from_numpy(np.array(Image.open(image_file).convert("RGB"))).permute(2, 0, 1).float() / 255
        with autocast(torch.device("cpu"), "bf16"):  # as the training run evaluated it
            predicted = predict_labels(model, image)
        label = semantic_map(image_file)
        matrix.update(predicted, label)
        predicted = predicted.numpy()
        renamed = predicted.copy()  # every garment whose most-voted class is wrong renamed to its true class
        for annotation in objects.get(image_id, []):
            mask = mask_utils.decode(annotation["segmentation"]).astype(bool)  # the visible pixels
            votes = np.bincount(predicted[mask], minlength=NUM_CLASSES)
            # a garment predicted all background is not recognised (argmax of zero votes would say class 1)
            majority.append(bool(votes[1:].any()) and int(votes[1:].argmax()) + 1 == annotation["category_id"])
            pixel_share.append(votes[annotation["category_id"]] / mask.sum())
            if not majority[-1]:
                renamed[mask & (predicted > 0)] = annotation["category_id"]
        recognised.update(torch.from_numpy(renamed), label)
    m = matrix.matrix.double()
    garments = m[1:].sum()
    return {"checkpoint": checkpoint, "mIoU_single_scale": round(matrix.mean_iou(), 4),
            "mIoU_if_garment_classes_never_confused": oracle_miou(m, lambda t, p: t > 0 and p > 0),
            "mIoU_if_garment_and_background_never_confused": oracle_miou(m, lambda t, p: t == 0 or p == 0),
            "garment_pixels_to_other_garment": round(float((m[1:, 1:].sum() - m[1:, 1:].diag().sum()) / garments), 4),
            "garment_pixels_to_background": round(float(m[1:, 0].sum() / garments), 4),
            "garments": len(majority), "garment_majority_class_right": round(float(np.mean(majority)), 4),
            "mIoU_if_every_garment_recognised": round(recognised.mean_iou(), 4),
            "garment_pixels_right_mean": round(float(np.mean(pixel_share)), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", default="datasets/scenes", help="scene set (its val split is analysed)")
    parser.add_argument("--sides", default="8,12,16,24,32", help="label-map sides for the resolution bound")
    parser.add_argument("--classifier", action="append", default=[], metavar="NAME=CHECKPOINT",
                        help="a classification training checkpoint to try on the garment crops (repeatable)")
    parser.add_argument("--segmenter", help="a segmentation training checkpoint to dissect")
    parser.add_argument("--json", default="benchmarks/results/segmentation_scenes_analysis.json")
    args = parser.parse_args()
    val = Path(args.scenes) / "val"
    if not (val / "annotations.json").is_file():
        sys.exit(f"no scenes at {val}: run `python -m benchmarks.scenes.make_scenes --out {args.scenes}` first")
    files, objects = load_split(val)
    report = {"scenes_val": str(val), "machine": machine(),
              "label_resolution_bound_miou": resolution_bound(files, [int(s) for s in args.sides.split(",")])}
    print("label-resolution bound (side: mIoU):", report["label_resolution_bound_miou"])
    report["classifier_on_garment_crops"] = {}
    for item in args.classifier:
        name, _, checkpoint = item.partition("=")
        if not checkpoint:
            sys.exit(f"--classifier wants NAME=CHECKPOINT, got {item!r}")
        result = crop_accuracy(checkpoint, files, objects)
        report["classifier_on_garment_crops"][name] = result
        print(f"classifier {name}: top-1 {result['top1']:.4f} on {result['crops']} garment crops")
    if args.segmenter:
        report["segmenter"] = segmenter_errors(args.segmenter, files, objects)
        print("segmenter:", json.dumps(report["segmenter"]))
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()

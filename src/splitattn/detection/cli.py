"""`splitattn detect train | eval | predict`: argument parsing only."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..cli_common import (
    add_device_argument,
    add_max_pixels_argument,
    add_train_parser,
    apply_max_pixels,
    device_of,
    metrics_text,
    positive_int,
    probability,
    run_training,
    write_json,
)


def _cmd_train(args: argparse.Namespace) -> None:
    from .config import load_detect_config
    from .task import train_detector

    run_training(args, load_detect_config, train_detector, lambda cfg, summary: (
        f"{cfg.model.kind} {cfg.model.backbone}: {summary.step} iterations, "
        f"{metrics_text(summary.metrics, ('bbox_AP', 'bbox_AP50', 'segm_AP', 'segm_AP50'))}"))


def _cmd_eval(args: argparse.Namespace) -> None:
    from .data import CocoDetection
    from .evaluate import evaluate_detector
    from .task import load_detector_checkpoint

    apply_max_pixels(args)
    device = device_of(args)
    model, ckpt = load_detector_checkpoint(args.checkpoint, device, verb="eval")
    data = ckpt["config"]["data"]
    images, annotations = args.images or data["val_images"], args.annotations or data["val_annotations"]
    dataset = CocoDetection(images, annotations, masks=ckpt["meta"]["kind"].endswith("mask_rcnn"),
                            strict=data.get("strict", False))
    print(dataset.problem_report())
    if dataset.class_names != ckpt["meta"]["class_names"]:
        raise ValueError(f"{annotations} has categories {dataset.class_names}, the checkpoint was trained on "
                         f"{ckpt['meta']['class_names']}: evaluate on a dataset with the same categories")
    metrics = evaluate_detector(model, dataset, device, batch_size=args.batch_size)
    for key, value in metrics.items():
        print(f"{key:>12}: {value:.4f}" if isinstance(value, float) else f"{key:>12}: {value}")
    write_json(args.json, {"checkpoint": args.checkpoint, "annotations": str(annotations), **metrics})


def _cmd_predict(args: argparse.Namespace) -> None:
    from torchvision.io import write_png
    from torchvision.transforms.v2.functional import pil_to_tensor

    from ..data.images import open_image
    from .task import load_detector_checkpoint
    from .visualize import draw_detections, predict_images

    apply_max_pixels(args)
    device = device_of(args)
    model, ckpt = load_detector_checkpoint(args.checkpoint, device, verb="predict")
    names = ckpt["meta"]["class_names"]
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for path in args.images:
        image = pil_to_tensor(open_image(path))
        (prediction,) = predict_images(model, [image.float() / 255], device)
        picture = draw_detections(image, prediction, names, args.score_thresh)
        target = out_dir / f"{Path(path).stem}_detections.png"
        write_png(picture, str(target))
        keep = prediction["scores"] >= args.score_thresh
        found = [f"{names[int(label) - 1]} {score:.2f}" for label, score in
                 zip(prediction["labels"][keep], prediction["scores"][keep].tolist())]
        print(f"{path}: {len(found)} objects ≥ {args.score_thresh} [{', '.join(found)}] → {target}")


def add_commands(sub) -> None:
    add_train_parser(sub, "configs/detection/coco_mask_rcnn_resnest50_1x.yaml", _cmd_train)

    p = sub.add_parser("eval", help="pycocotools bbox (and segm) AP of a checkpoint")
    p.add_argument("--checkpoint", required=True, help="runs/…/checkpoints/last.pth")
    p.add_argument("--images", help="image folder (default: the checkpoint's validation images)")
    p.add_argument("--annotations", help="COCO json (default: the checkpoint's validation annotations)")
    p.add_argument("--batch-size", type=positive_int, default=4)
    p.add_argument("--json", help="write the metrics here")
    add_device_argument(p)
    add_max_pixels_argument(p)
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("predict", help="detect objects in images and write overlay PNGs")
    p.add_argument("--checkpoint", required=True, help="runs/…/checkpoints/last.pth")
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--out-dir", default="predictions", help="where the overlays go (default ./predictions)")
    p.add_argument("--score-thresh", type=probability, default=0.5, help="draw detections at or above this score")
    add_device_argument(p)
    add_max_pixels_argument(p)
    p.set_defaults(func=_cmd_predict)

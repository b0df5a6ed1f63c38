"""`splitattn segment train | eval | predict`: argument parsing only."""

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
    run_training,
    write_json,
)


def _cmd_train(args: argparse.Namespace) -> None:
    from .config import load_segment_config
    from .task import train_segmenter

    run_training(args, load_segment_config, train_segmenter, lambda cfg, summary: (
        f"{cfg.model.kind} {cfg.model.backbone}: {summary.step} iterations, "
        f"{metrics_text(summary.metrics, ('mIoU', 'pixAcc', 'mIoU_ms_flip', 'pixAcc_ms_flip'))}"))


def _scales(text: str) -> list[float]:
    try:
        scales = [float(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers") from None
    if not scales or min(scales) <= 0:
        raise argparse.ArgumentTypeError(f"scales must be positive numbers, got {text!r}")
    return scales


def _cmd_eval(args: argparse.Namespace) -> None:
    from .config import segment_config_from_dict
    from .data import build_segmentation_data
    from .evaluate import evaluate_segmenter
    from .task import load_segmenter_checkpoint

    apply_max_pixels(args)
    device = device_of(args)
    model, ckpt = load_segmenter_checkpoint(args.checkpoint, device, verb="eval")
    cfg = segment_config_from_dict(ckpt["config"])
    if args.root:
        cfg.data.root = args.root
    if args.split:
        cfg.data.val_split = args.split
    _, dataset = build_segmentation_data(cfg.data, train=False)
    if dataset.num_classes != ckpt["meta"]["num_classes"]:
        raise ValueError(f"the dataset has {dataset.num_classes} classes, the checkpoint "
                         f"{ckpt['meta']['num_classes']}: evaluate on the dataset it was trained for")
    scales = args.scales or cfg.eval.scales
    metrics = evaluate_segmenter(model, dataset, device, scales=scales, flip=args.flip,
                                 crop_size=cfg.eval.window(cfg.data), base_size=cfg.data.base_size)
    print(f"pixAcc {metrics['pixAcc']:.4f}  mIoU {metrics['mIoU']:.4f}  (scales {list(scales)}, flip {args.flip})")
    write_json(args.json, {"checkpoint": args.checkpoint, "scales": list(scales), "flip": args.flip, **metrics})


def _cmd_predict(args: argparse.Namespace) -> None:
    from PIL import Image
    from torchvision.transforms.v2.functional import pil_to_tensor

    from ..data.images import open_image
    from .task import load_segmenter_checkpoint
    from .visualize import overlay, predict_labels

    apply_max_pixels(args)
    device = device_of(args)
    model, ckpt = load_segmenter_checkpoint(args.checkpoint, device, verb="predict")
    names = ckpt["meta"]["class_names"]
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for path in args.images:
        image = pil_to_tensor(open_image(path)).float() / 255
        labels = predict_labels(model, image, device)
        target = out_dir / f"{Path(path).stem}_segmentation.png"
        Image.fromarray(overlay(image, labels)).save(target)
        counts = labels.flatten().bincount(minlength=len(names) or 1)
        present = [f"{names[i] if i < len(names) else i} {100 * c / labels.numel():.1f}%"
                   for i, c in enumerate(counts.tolist()) if c]
        print(f"{path}: {', '.join(present)} → {target}")


def add_commands(sub) -> None:
    add_train_parser(sub, "configs/segmentation/ade20k_deeplabv3_resnest50.yaml", _cmd_train)

    p = sub.add_parser("eval", help="pixAcc and mIoU of a checkpoint (multi-scale + flip on request)")
    p.add_argument("--checkpoint", required=True, help="runs/…/checkpoints/last.pth")
    p.add_argument("--root", help="dataset root (default: the checkpoint's)")
    p.add_argument("--split", help="split (default: the checkpoint's validation split)")
    p.add_argument("--scales", type=_scales, help="comma-separated, e.g. 0.5,0.75,1,1.25,1.5,1.75 (default: the "
                                                  "config's)")
    p.add_argument("--flip", action="store_true", help="also average the horizontally flipped prediction")
    p.add_argument("--json", help="write the metrics here")
    add_device_argument(p)
    add_max_pixels_argument(p)
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("predict", help="segment images and write colour overlay PNGs")
    p.add_argument("--checkpoint", required=True, help="runs/…/checkpoints/last.pth")
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--out-dir", default="predictions", help="where the overlays go (default ./predictions)")
    add_device_argument(p)
    add_max_pixels_argument(p)
    p.set_defaults(func=_cmd_predict)

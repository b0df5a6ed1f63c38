"""`splitattn segment train | eval | predict`: argument parsing only."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..cli_common import (
    add_device_argument,
    add_max_pixels_argument,
    add_train_parser,
    add_weights_argument,
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


def _check_source(args: argparse.Namespace, parser_name: str) -> None:
    if bool(args.checkpoint) == bool(args.pretrained):
        raise ValueError(f"segment {parser_name} needs one of --checkpoint (a training run's checkpoint) or "
                         "--pretrained NAME (see `splitattn list --task segment`)")
    if args.pretrained and args.weights == "ema":
        raise ValueError("--weights ema needs a --checkpoint of a run that kept an EMA (engine.ema_decay > 0): "
                         "drop it for --pretrained")


def _load_pretrained(name: str, device):
    from .data import DATASET_CLASSES
    from .models import create_segmenter
    from .zoo import get_segmentation_entry

    get_segmentation_entry(name)  # a zoo name (a file needs KIND / BACKBONE: use the Python API); names the fix
    model = create_segmenter(pretrained=name).to(device).eval()
    return model, DATASET_CLASSES[model.zoo_row.dataset]


def _cmd_eval_pretrained(args: argparse.Namespace, device) -> None:
    from .data import DATASETS
    from .evaluate import evaluate_segmenter

    if not args.root:
        raise ValueError("segment eval --pretrained needs --root (the dataset folder)")
    model, _ = _load_pretrained(args.pretrained, device)
    row = model.zoo_row
    builder, _, val_split = DATASETS[row.dataset]
    dataset = builder(args.root, args.split or val_split)
    protocol = dict(row.eval_options)
    if args.scales:
        protocol["scales"] = args.scales
    if args.flip is not None:
        protocol["flip"] = args.flip
    metrics = evaluate_segmenter(model, dataset, device, **protocol)
    print(f"{row.name} on {row.dataset} {args.split or val_split}: pixAcc {metrics['pixAcc']:.4f}  "
          f"mIoU {metrics['mIoU']:.4f}  (published: mIoU {row.mean_iou:.2f}%; {row.eval_protocol})")
    write_json(args.json, {"pretrained": row.name, "protocol": {k: list(v) if isinstance(v, tuple) else v
                                                               for k, v in protocol.items()}, **metrics})


def _cmd_eval(args: argparse.Namespace) -> None:
    from .config import segment_config_from_dict
    from .data import build_segmentation_data
    from .evaluate import evaluate_segmenter
    from .task import load_segmenter_checkpoint

    _check_source(args, "eval")
    apply_max_pixels(args)
    device = device_of(args)
    if args.pretrained:
        _cmd_eval_pretrained(args, device)
        return
    model, ckpt = load_segmenter_checkpoint(args.checkpoint, device, verb="eval", weights=args.weights)
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
    metrics = evaluate_segmenter(model, dataset, device, scales=scales, flip=bool(args.flip),
                                 crop_size=cfg.eval.window(cfg.data), base_size=cfg.data.base_size)
    print(f"pixAcc {metrics['pixAcc']:.4f}  mIoU {metrics['mIoU']:.4f}  (scales {list(scales)}, "
          f"flip {bool(args.flip)})")
    write_json(args.json, {"checkpoint": args.checkpoint, "scales": list(scales), "flip": bool(args.flip),
                           **metrics})


def _cmd_predict(args: argparse.Namespace) -> None:
    from PIL import Image
    from torchvision.transforms.v2.functional import pil_to_tensor

    from ..data.images import open_image
    from .task import load_segmenter_checkpoint
    from .visualize import overlay, predict_labels

    _check_source(args, "predict")
    apply_max_pixels(args)
    device = device_of(args)
    if args.pretrained:
        model, names = _load_pretrained(args.pretrained, device)
    else:
        model, ckpt = load_segmenter_checkpoint(args.checkpoint, device, verb="predict", weights=args.weights)
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

    p = sub.add_parser("eval", help="pixAcc and mIoU of a checkpoint or a released model (multi-scale + flip on "
                                    "request)")
    p.add_argument("--checkpoint", help="runs/…/checkpoints/last.pth")
    p.add_argument("--pretrained", help="a released segmenter (splitattn list --task segment), evaluated with its "
                                        "published protocol")
    p.add_argument("--root", help="dataset root (default: the checkpoint's; required with --pretrained)")
    p.add_argument("--split", help="split (default: the checkpoint's / the dataset's validation split)")
    p.add_argument("--scales", type=_scales, help="comma-separated, e.g. 0.5,0.75,1,1.25,1.5,1.75 (default: the "
                                                  "config's / the published protocol's)")
    p.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                   help="also average the horizontally flipped prediction (default: off / the published protocol's)")
    p.add_argument("--json", help="write the metrics here")
    add_weights_argument(p)
    add_device_argument(p)
    add_max_pixels_argument(p)
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("predict", help="segment images and write colour overlay PNGs")
    p.add_argument("--checkpoint", help="runs/…/checkpoints/last.pth")
    p.add_argument("--pretrained", help="a released segmenter (splitattn list --task segment)")
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--out-dir", default="predictions", help="where the overlays go (default ./predictions)")
    add_weights_argument(p)
    add_device_argument(p)
    add_max_pixels_argument(p)
    p.set_defaults(func=_cmd_predict)

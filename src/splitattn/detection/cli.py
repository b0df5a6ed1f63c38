"""`splitattn detect train | eval | predict`: argument parsing only."""

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
    positive_int,
    probability,
    run_training,
    write_json,
)
from .factory import PANOPTIC


def _cmd_train(args: argparse.Namespace) -> None:
    from .config import load_detect_config
    from .task import train_detector

    run_training(args, load_detect_config, train_detector, lambda cfg, summary: (
        f"{cfg.model.kind} {cfg.model.backbone}: {summary.step} iterations, "
        f"{metrics_text(summary.metrics, ('bbox_AP', 'bbox_AP50', 'segm_AP', 'segm_AP50'))}"))


def _load_model(args: argparse.Namespace, device, verb: str):
    """(model in eval mode, class names, the checkpoint's data section or {}) from --checkpoint or --pretrained;
    wrapped in detectron2's multi-scale + flip test with --tta. A Panoptic FPN from a checkpoint carries its stuff
    class names as ``model.stuff_classes`` (None for a released one)."""
    if args.tta_sizes and not args.tta:
        raise ValueError("--tta-sizes sets the sizes of --tta: add --tta")
    if args.pretrained and args.weights == "ema":
        raise ValueError("--weights ema needs a --checkpoint of a run that kept an EMA (engine.ema_decay > 0): "
                         "drop it for --pretrained")
    if args.pretrained:
        from .factory import create_detector
        from .zoo import COCO_CLASSES

        model = create_detector(pretrained=args.pretrained)
        print(f"{args.pretrained}: " + "; ".join(model.pretrained_notes))
        model, names, data = model.to(device).eval(), list(COCO_CLASSES), {}
    else:
        from .task import load_detector_checkpoint

        model, ckpt = load_detector_checkpoint(args.checkpoint, device, verb=verb, weights=args.weights)
        names, data = ckpt["meta"]["class_names"], ckpt["config"]["data"]
        model.stuff_classes = ckpt["meta"].get("stuff_classes")
    if args.tta:
        from .rcnn.tta import DetectionTTA

        kind = model.kind
        model = DetectionTTA(model, args.tta_sizes) if args.tta_sizes else DetectionTTA(model)
        model.kind = kind
        print(f"test-time augmentation: short sides {', '.join(map(str, model.min_sizes))} (max {model.max_size})"
              f"{' and their flips' if model.flip else ''}, merged as detectron2 merges them")
    return model, names, data


def _cmd_eval(args: argparse.Namespace) -> None:
    from .data import CocoDetection
    from .evaluate import evaluate_detector

    apply_max_pixels(args)
    device = device_of(args)
    if args.pretrained and not (args.images and args.annotations):
        raise ValueError("--pretrained needs --images and --annotations (a COCO-format set with COCO's 80 "
                         "categories, e.g. val2017 and instances_val2017.json; for a panoptic row "
                         "panoptic_val2017.json)")
    model, names, data = _load_model(args, device, "eval")
    images, annotations = args.images or data["val_images"], args.annotations or data["val_annotations"]
    if model.kind in PANOPTIC:
        return _eval_panoptic(args, model, names, images, annotations, device, data)
    dataset = CocoDetection(images, annotations, masks=model.kind.endswith("mask_rcnn"),
                            strict=data.get("strict", False))
    print(dataset.problem_report())
    if list(dataset.class_names) != list(names):
        raise ValueError(f"{annotations} has categories {dataset.class_names[:6]}…, the model was trained on "
                         f"{names[:6]}…: evaluate on a dataset with the same categories")
    metrics = evaluate_detector(model, dataset, device, batch_size=args.batch_size)
    for key, value in metrics.items():
        print(f"{key:>12}: {value:.4f}" if isinstance(value, float) else f"{key:>12}: {value}")
    write_json(args.json, {"checkpoint": args.checkpoint or args.pretrained, "annotations": str(annotations),
                           **metrics})


def _eval_panoptic(args: argparse.Namespace, model, names, images, annotations, device, data: dict) -> None:
    """PQ of a Panoptic FPN on a COCO panoptic set (json + PNG folder), its predictions written as COCO panoptic."""
    from .panoptic_data import CocoPanoptic
    from .panoptic_eval import evaluate_panoptic, panoptic_metrics

    dataset = CocoPanoptic(images, annotations, args.panoptic_dir or data.get("val_panoptic_dir"),
                           strict=data.get("strict", False))
    print(dataset.problem_report())
    if list(dataset.thing_classes) != list(names):
        raise ValueError(f"{annotations} has thing categories {dataset.thing_classes[:6]}…, the model was trained on "
                         f"{names[:6]}…: evaluate on a dataset with the same categories")
    semantic = model.sem_seg_head.predictor.out_channels
    stuff = getattr(model, "stuff_classes", None)
    if dataset.num_stuff_classes != semantic or (stuff is not None and list(dataset.stuff_classes) != list(stuff)):
        raise ValueError(f"{annotations} has stuff categories {dataset.stuff_classes[1:6]}… "
                         f"({dataset.num_stuff_classes} semantic classes with 'things'), the model predicts {semantic}"
                         f"{f' ({stuff[1:6]}…)' if stuff else ''}: evaluate on a dataset with the same categories")
    out_dir = args.out_dir or str(Path(args.json or "panoptic_eval.json").with_suffix("")) + "_predictions"
    results = evaluate_panoptic(model, dataset, out_dir, device, batch_size=args.batch_size, overwrite=args.overwrite)
    metrics = panoptic_metrics(results)
    for key, value in metrics.items():
        print(f"{key:>12}: {value:.4f}")
    write_json(args.json, {"checkpoint": args.checkpoint or args.pretrained, "annotations": str(annotations),
                           "predictions": out_dir, **metrics})


def _write_panoptic(prediction: dict, stem: str, out_dir: Path, names, stuff_names) -> Path:
    """The panoptic segmentation as a COCO panoptic PNG (id = R + 256 G + 256² B) and its segments as json, each
    with its class name (things: ``category_id`` = label − 1; stuff: the semantic class, 0 = things)."""
    from .panoptic_format import write_panoptic_png

    target = out_dir / f"{stem}_panoptic.png"
    write_panoptic_png(target, prediction["panoptic_seg"].numpy())
    segments = []
    for segment in prediction["segments_info"]:
        table = names if segment["isthing"] else stuff_names
        name = table[segment["category_id"]] if table and segment["category_id"] < len(table) else None
        segments.append({**segment, "name": name})
    write_json(str(out_dir / f"{stem}_panoptic.json"), {"segments_info": segments})
    return target


def _cmd_predict(args: argparse.Namespace) -> None:
    from torchvision.io import write_png
    from torchvision.transforms.v2.functional import pil_to_tensor

    from ..data.images import open_image
    from .visualize import draw_detections, predict_images

    apply_max_pixels(args)
    device = device_of(args)
    model, names, _ = _load_model(args, device, "predict")
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
        if "panoptic_seg" in prediction:
            panoptic = _write_panoptic(prediction, Path(path).stem, out_dir, names,
                                       getattr(model, "stuff_classes", None))
            stuff = sum(not s["isthing"] for s in prediction["segments_info"])
            print(f"{path}: {len(prediction['segments_info']) - stuff} things + {stuff} stuff segments → {panoptic}")
        print(f"{path}: {len(found)} objects ≥ {args.score_thresh} [{', '.join(found)}] → {target}")


def _sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"expected positive short sides separated by commas, e.g. 400,800: {text!r}")
    return sizes


def _add_model_arguments(p: argparse.ArgumentParser) -> None:
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--checkpoint", help="a `detect train` checkpoint: runs/…/checkpoints/last.pth")
    which.add_argument("--pretrained", metavar="NAME",
                       help="a released COCO detector (see `splitattn list --task detect`), downloaded and cached")
    add_weights_argument(p)
    p.add_argument("--tta", action="store_true",
                   help="detectron2's multi-scale + flip test (short sides 400..1200, max 4000; detectron2 flavour)")
    p.add_argument("--tta-sizes", type=_sizes, metavar="S1,S2,...",
                   help="the short sides --tta uses instead of 400,500,...,1200")


def add_commands(sub) -> None:
    add_train_parser(sub, "configs/detection/coco_mask_rcnn_resnest50_1x.yaml", _cmd_train)

    p = sub.add_parser("eval", help="pycocotools bbox (and segm) AP of a checkpoint; PQ of a Panoptic FPN")
    _add_model_arguments(p)
    p.add_argument("--images", help="image folder (default: the checkpoint's validation images)")
    p.add_argument("--annotations", help="COCO json (default: the checkpoint's validation annotations); for a "
                   "Panoptic FPN the COCO panoptic json (panoptic_val2017.json)")
    p.add_argument("--panoptic-dir", help="Panoptic FPN: the ground-truth PNG folder (default: the json's path "
                   "without .json, as COCO ships it)")
    p.add_argument("--out-dir", help="Panoptic FPN: where the predicted PNGs and json go (default: next to --json, "
                   "or ./panoptic_eval_predictions)")
    p.add_argument("--overwrite", action="store_true", help="Panoptic FPN: replace an earlier evaluation's files")
    p.add_argument("--batch-size", type=positive_int, default=4)
    p.add_argument("--json", help="write the metrics here")
    add_device_argument(p)
    add_max_pixels_argument(p)
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("predict", help="detect objects in images and write overlay PNGs")
    _add_model_arguments(p)
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--out-dir", default="predictions", help="where the overlays go (default ./predictions)")
    p.add_argument("--score-thresh", type=probability, default=0.5, help="draw detections at or above this score")
    add_device_argument(p)
    add_max_pixels_argument(p)
    p.set_defaults(func=_cmd_predict)

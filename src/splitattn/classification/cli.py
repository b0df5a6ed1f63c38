"""`splitattn train | eval | predict`: argument parsing only."""

from __future__ import annotations

import argparse

from ..cli_common import (
    add_device_argument,
    add_max_pixels_argument,
    add_train_parser,
    add_weights_argument,
    apply_max_pixels,
    device_of,
    non_negative_int,
    positive_int,
    run_training,
)


def _last_line(cfg, summary) -> str:
    top1, count = summary.metrics.get("val_top1"), summary.metrics.get("val_count")
    score = "n/a" if top1 is None else f"{top1:.2f}% on {count} images"
    epochs = summary.step / (summary.total_steps / cfg.optim.epochs)
    return f"{cfg.model.name}: top-1 {score} after {epochs:g} epoch(s), {summary.step} steps"


def _cmd_train(args: argparse.Namespace) -> None:
    from .config import load_classification_config
    from .task import train_classifier

    run_training(args, load_classification_config, train_classifier, _last_line)


def _predictor(args: argparse.Namespace, verb: str):
    from ..deploy import compile_for_inference, deploy
    from .inference import load_predictor

    predictor = load_predictor(args.checkpoint, args.model, args.pretrained, verb, device_of(args), args.weights)
    if args.deploy:
        predictor.model = deploy(predictor.model)
    if args.compile:
        predictor.model = compile_for_inference(predictor.model)
    return predictor


def _cmd_eval(args: argparse.Namespace) -> None:
    import torch

    from .evaluate import evaluate
    from .inference import eval_batches

    apply_max_pixels(args)
    predictor = _predictor(args, "eval")
    batches = eval_batches(predictor, args.dataset, args.data, args.split, args.batch_size, args.workers)
    engine = predictor.meta.get("config", {}).get("engine", {})  # a training checkpoint: evaluate as trained
    amp = args.amp or engine.get("amp", "none")
    channels_last = bool(engine.get("channels_last", False))
    if channels_last and not args.deploy:
        predictor.model.to(memory_format=torch.channels_last)
    print(f"evaluating {predictor.source} on {predictor.device}, {len(batches)} batches of up to {args.batch_size}",
          flush=True)
    metrics = evaluate(predictor.model, batches, predictor.device, amp, channels_last, progress=True)
    print(f"{predictor.source}: top-1 {metrics['val_top1']:.2f}%  top-5 {metrics['val_top5']:.2f}%  "
          f"loss {metrics['val_loss']:.4f} on {metrics['val_count']} images"
          + (f" ({metrics['val_skipped']} unreadable skipped)" if metrics["val_skipped"] else ""))


def _cmd_predict(args: argparse.Namespace) -> None:
    from ..data.images import open_image

    apply_max_pixels(args)
    predictor = _predictor(args, "predict")
    for path in args.images:
        top = predictor.topk(open_image(path), args.topk)
        print(f"{path}:")
        for name, prob, index in top:
            print(f"  {prob:7.2%}  {index:4d}  {name}")


def add_commands(sub) -> None:
    add_train_parser(sub, "configs/imagenet/resnest50.yaml", _cmd_train)
    for name, helptext in (("eval", "top-1/top-5 of a checkpoint or zoo model on a dataset"),
                           ("predict", "top-k classes of images")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("--checkpoint", help="a training checkpoint (runs/…/best.pth) or a state_dict (with --model)")
        p.add_argument("--model", help="zoo model name, for --pretrained or a plain state_dict")
        p.add_argument("--pretrained", action="store_true", help="use the released weights of --model")
        p.add_argument("--deploy", action="store_true", help="run the fused inference form (splitattn.deploy)")
        p.add_argument("--compile", action="store_true", help="torch.compile with frozen weights (slow first call)")
        add_weights_argument(p)
        add_device_argument(p)
        add_max_pixels_argument(p)
        if name == "eval":
            p.add_argument("--data", help="dataset root: ROOT/<split>/CLASS/*.jpg, or the Fashion-MNIST folder")
            p.add_argument("--dataset", choices=["imagefolder", "fashion_mnist"],
                           help="default: the checkpoint's, else imagefolder")
            p.add_argument("--split", default="val", help="split folder (default val)")
            p.add_argument("--batch-size", type=positive_int, default=64)
            p.add_argument("--workers", type=non_negative_int, default=2)
            p.add_argument("--amp", choices=["none", "bf16"], help="default: the checkpoint's training setting")
            p.set_defaults(func=_cmd_eval)
        else:
            p.add_argument("images", nargs="+", help="image files")
            p.add_argument("--topk", type=positive_int, default=5, help="classes to show per image (default 5)")
            p.set_defaults(func=_cmd_predict)

"""`splitattn <command>`: argument parsing only; the work lives in the library."""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

from .cli_tasks import add_task_commands
from .models.weights import CheckpointError


def _cmd_list(args: argparse.Namespace) -> None:
    from .models.zoo import get_entry, list_models
    from .report import zoo_table

    names = list_models(args.pattern, tag=args.tag)
    if args.pretrained:
        names = [n for n in names if get_entry(n).checkpoint]
    if not names:
        raise SystemExit(f"no model matches {args.pattern!r}" + (f" with tag {args.tag!r}" if args.tag else ""))
    print(zoo_table(names))


def _cmd_info(args: argparse.Namespace) -> None:
    from .models.info import model_info
    from .report import entry_report

    if args.json:
        print(json.dumps(model_info(args.name), indent=2, default=str))
    else:
        print(entry_report(args.name))


def _cmd_download(args: argparse.Namespace) -> None:
    from .models.weights import resolve_checkpoint
    from .models.zoo import get_entry

    for name in args.names:
        print(f"{name}: {resolve_checkpoint(True, get_entry(name))}")


def _cmd_train(args: argparse.Namespace) -> None:
    from .config import load_config
    from .engine.trainer import train

    shortcuts = [f"engine.resume={args.resume}"] if args.resume is not None else []
    shortcuts += ["engine.sync_bn=true"] if args.sync_bn else []
    shortcuts += [f"engine.amp={args.amp}"] if args.amp else []
    shortcuts += [f"engine.out_dir={args.out_dir}"] if args.out_dir else []
    summary = train(load_config(args.config, shortcuts + args.overrides))
    if args.summary_json and summary.files:
        Path(args.summary_json).parent.mkdir(parents=True, exist_ok=True)
        import platform

        import torch

        machine = {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                   "torch": torch.__version__, "date": time.strftime("%Y-%m-%d")}
        Path(args.summary_json).write_text(json.dumps(
            {**asdict(summary), "command": " ".join(["splitattn", *sys.argv[1:]]), "machine": machine},
            indent=2) + "\n")
    if summary.files:  # the main process reports
        for name, path in summary.files.items():
            print(f"{name:>12}: {path}")
        if summary.skipped_images:
            print(f"skipped {summary.skipped_images} unreadable training images (data.strict=true makes them fatal)")
        if summary.stopped:
            print(f"stopped early: {summary.stopped}")
        top1 = "n/a" if summary.val_top1 is None else f"{summary.val_top1:.2f}%"
        minutes, seconds = divmod(round(summary.wall_s), 60)
        print(f"{summary.model}: test top-1 {top1} after {summary.epochs} epoch(s), {summary.global_step} steps, "
              f"wall time {minutes}m{seconds:02d}s")


def _cmd_eval(args: argparse.Namespace) -> None:
    import torch

    from .engine.evaluate import evaluate
    from .inference import eval_batches, load_predictor

    predictor = _fast(load_predictor(args.checkpoint, args.model, args.pretrained), args)
    batches = eval_batches(predictor, args.dataset, args.data, args.split, args.batch_size, args.workers)
    engine = predictor.meta.get("config", {}).get("engine", {})  # a training checkpoint: evaluate as trained
    amp = args.amp or engine.get("amp", "none")
    channels_last = bool(engine.get("channels_last", False))
    if channels_last and not args.deploy:
        predictor.model.to(memory_format=torch.channels_last)
    metrics = evaluate(predictor.model, batches, torch.device("cpu"), amp, channels_last)
    print(f"{predictor.source}: top-1 {metrics['val_top1']:.2f}%  top-5 {metrics['val_top5']:.2f}%  "
          f"loss {metrics['val_loss']:.4f} on {metrics['val_count']} images"
          + (f" ({metrics['val_skipped']} unreadable skipped)" if metrics["val_skipped"] else ""))


def _cmd_predict(args: argparse.Namespace) -> None:
    from PIL import Image

    from .inference import load_predictor

    predictor = _fast(load_predictor(args.checkpoint, args.model, args.pretrained), args)
    for path in args.images:
        with Image.open(path) as img:
            top = predictor.topk(img, args.topk)
        print(f"{path}:")
        for name, prob, index in top:
            print(f"  {prob:7.2%}  {index:4d}  {name}")


def _fast(predictor, args: argparse.Namespace):
    """Apply --deploy (fused inference form) and --compile (torch.compile with frozen weights)."""
    from .deploy import compile_for_inference, deploy

    if args.deploy:
        predictor.model = deploy(predictor.model)
    if args.compile:
        predictor.model = compile_for_inference(predictor.model)
    return predictor


def _load_for_export(args: argparse.Namespace):
    from .inference import load_predictor
    from .models.zoo import get_entry

    if Path(args.source).exists():
        return load_predictor(args.source, args.model, False)
    get_entry(args.source)  # an unknown name fails here with the close matches
    return load_predictor(None, args.source, args.pretrained)


def _cmd_export(args: argparse.Namespace) -> None:
    from .deploy import deploy
    from .export import check_export, export_model

    predictor = _load_for_export(args)
    model = deploy(predictor.model) if args.deploy else predictor.model
    images = _export_images(predictor, args)
    size = images.shape[-1]
    stem = Path(args.source).stem if Path(args.source).exists() else args.source
    suffix = {"onnx": ".onnx", "torchscript": ".pt"}[args.format]
    output = Path(args.output or f"{stem}{'-deploy' if args.deploy else ''}{suffix}")
    start = time.perf_counter()
    export_model(model, output, args.format, size, args.opset)
    print(f"wrote {output} ({output.stat().st_size / 2**20:.1f} MiB, {args.format}, dynamic batch, "
          f"{size}×{size}) in {time.perf_counter() - start:.1f}s")
    check = check_export(predictor.model, output, args.format, images)
    print(f"checked on {len(images)} real image(s), batch sizes {check.batch_sizes}: "
          f"max |Δ| {check.max_abs_diff:.2e} (relative {check.max_rel_diff:.2e}) against PyTorch; "
          f"exported model {check.images_per_s:.1f} img/s")


def _export_images(predictor, args: argparse.Namespace):
    """The images to check the export on: --images, else four foolbox ImageNet photos (real photos)."""
    import torch
    from PIL import Image

    from .demo import sample_photos

    paths = [Path(p) for p in args.images or []] or sample_photos()[:4]
    if not paths:
        raise ValueError("no images to check the export on: pass --images FILE…")
    tensors = []
    for path in paths:
        with Image.open(path) as img:
            tensors.append(predictor.transform(img))
    return torch.stack(tensors)


def _cmd_bench(args: argparse.Namespace) -> None:
    from .benchmark.suite import BenchConfig, format_table, run_bench, to_json

    def split(text: str) -> tuple[str, ...]:
        return tuple(t.strip() for t in text.split(",") if t.strip())

    config = BenchConfig(model=args.model, batch_sizes=tuple(int(b) for b in split(args.batch_sizes)),
                         image_size=args.image_size, dtypes=split(args.dtypes), layouts=split(args.layouts),
                         modes=split(args.modes), train=not args.no_train, peers=split(args.peers),
                         repeats=args.repeats, device=args.device)
    result = run_bench(config)
    print(format_table(result))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(to_json(result))
        print(f"wrote {args.json}")


def _cmd_demo(args: argparse.Namespace) -> None:
    from .demo import run_demo

    run_demo(args.model, args.image)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="splitattn", description="ResNeSt (Split-Attention Networks) models, weights and tools.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="list the zoo with measured params/GMACs beside the published figures")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style name filter, e.g. 'resnest50*'")
    p.add_argument("--tag", choices=["resnest", "fast", "baseline"], help="only models with this tag")
    p.add_argument("--pretrained", action="store_true", help="only models with released weights")
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("info", help="everything about one model: architecture, figures, eval transform, weights")
    p.add_argument("name", help="model name (see `splitattn list`); timm names such as resnest50d work")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("download", help="fetch released checkpoints into the cache (sha256-checked)")
    p.add_argument("names", nargs="+", help="model names")
    p.set_defaults(func=_cmd_download)

    p = sub.add_parser("train", help="train from a YAML config and key=value overrides (torchrun: several processes)")
    p.add_argument("--config", help="YAML file, e.g. configs/imagenet/resnest50.yaml")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. optim.epochs=10 data.root=/data/imagenet")
    p.add_argument("--resume", metavar="auto|PATH", help="= engine.resume ('auto': OUT_DIR/checkpoints/last.pth)")
    p.add_argument("--sync-bn", action="store_true", help="= engine.sync_bn=true (SyncBN on GPU, CPU fallback on gloo)")
    p.add_argument("--amp", choices=["none", "bf16", "fp16"], help="= engine.amp")
    p.add_argument("--out-dir", help="= engine.out_dir")
    p.add_argument("--summary-json", help="also write the run summary (accuracy, wall time, files) to this file")
    p.set_defaults(func=_cmd_train)

    for name, helptext in (("eval", "top-1/top-5 of a checkpoint or zoo model on a dataset"),
                           ("predict", "top-5 classes of images")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("--checkpoint", help="a training checkpoint (runs/…/best.pth) or a state_dict (with --model)")
        p.add_argument("--model", help="zoo model name, for --pretrained or a plain state_dict")
        p.add_argument("--pretrained", action="store_true", help="use the released weights of --model")
        p.add_argument("--deploy", action="store_true", help="run the fused inference form (splitattn.deploy)")
        p.add_argument("--compile", action="store_true", help="torch.compile with frozen weights (slow first call)")
        if name == "eval":
            p.add_argument("--data", help="dataset root: ROOT/<split>/CLASS/*.jpg, or the Fashion-MNIST folder")
            p.add_argument("--dataset", choices=["imagefolder", "fashion_mnist"],
                           help="default: the checkpoint's, else imagefolder")
            p.add_argument("--split", default="val", help="split folder (default val)")
            p.add_argument("--batch-size", type=int, default=64)
            p.add_argument("--workers", type=int, default=2)
            p.add_argument("--amp", choices=["none", "bf16"], help="default: the checkpoint's training setting")
            p.set_defaults(func=_cmd_eval)
        else:
            p.add_argument("images", nargs="+", help="image files")
            p.add_argument("--topk", type=int, default=5)
            p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("export", help="write ONNX or TorchScript (dynamic batch), then run it and compare")
    p.add_argument("source", help="zoo model name, or a checkpoint file (with --model for a plain state_dict)")
    p.add_argument("--format", choices=["onnx", "torchscript"], required=True)
    p.add_argument("--deploy", action="store_true", help="export the fused inference form")
    p.add_argument("--model", help="zoo model name for a plain state_dict")
    p.add_argument("--pretrained", action="store_true", help="the released weights of the named model")
    p.add_argument("--output", help="output file (default: NAME[-deploy].onnx / .pt here)")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset (default 18)")
    p.add_argument("--images", nargs="*", help="real images to check the export on (default: foolbox photos)")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("bench", help="throughput and memory: ours (plain, deploy) vs timm and torchvision")
    p.add_argument("--model", default="resnest50", help="zoo model (default resnest50)")
    p.add_argument("--batch-sizes", default="16", help="comma-separated (default 16)")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--dtypes", default="fp32,bf16", help="fp32,bf16 (fp16 on GPU)")
    p.add_argument("--layouts", default="nchw,nhwc", help="nchw,nhwc (deploy is always NHWC inside)")
    p.add_argument("--modes", default="eager,compiled", help="eager,compiled")
    p.add_argument("--peers", default="timm,torchvision", help="timm,torchvision (timm is optional)")
    p.add_argument("--no-train", action="store_true", help="skip the training-step rows")
    p.add_argument("--repeats", type=int, default=5, help="timed calls per row (median)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--json", help="write the result here, e.g. benchmarks/results/bench.json")
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("demo", help="the zoo table and a real photo through a model")
    p.add_argument("--model", default="resnest50", help="model name (default resnest50)")
    p.add_argument("--image", help="image file (default: a real ImageNet photo from the foolbox wheel)")
    p.set_defaults(func=_cmd_demo)
    add_task_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # key=value overrides may also follow --options: `train --resume auto optim.epochs=3`
        if not hasattr(args, "overrides") or any(x.startswith("-") or "=" not in x for x in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides += extra
    try:
        args.func(args)
    except (CheckpointError, ValueError, TypeError, RuntimeError, OSError) as err:
        print(f"splitattn {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

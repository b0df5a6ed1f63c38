"""`splitattn <command>`: argument parsing only; the work lives in the library.

The core's verbs are here (list, info, download, demo, export, bench, convert); each task adds its own
(classification: train / eval / predict; `detect …`; `segment …`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .cli_common import (
    add_device_argument,
    add_max_pixels_argument,
    add_weights_argument,
    apply_max_pixels,
    device_of,
    positive_int,
)
from .models.weights import CheckpointError
from .optional import MissingDependency


def _cmd_list(args: argparse.Namespace) -> None:
    if args.task == "detect":
        from .detection.zoo import detection_zoo_table

        print(detection_zoo_table(args.pattern))
        return
    if args.task == "segment":
        from .segmentation.zoo import segmentation_zoo_table

        print(segmentation_zoo_table(args.pattern))
        return
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
    from .models.weights import download_checkpoint, resolve_checkpoint
    from .models.zoo import get_entry

    for name in args.names:
        entry = get_entry(name)
        if args.source == "official" and entry.checkpoint:  # no Hub fallback
            ckpt = entry.checkpoint
            path = download_checkpoint(ckpt.urls, ckpt.filename, ckpt.sha256_prefix)
        else:  # auto: official URLs, then the Hub copies; hf-hub: the Hub copy only
            path = resolve_checkpoint(True if args.source != "hf-hub" else "hf-hub", entry)
        print(f"{name}: {path}")


def _load_for_export(args: argparse.Namespace):
    from .classification.inference import load_predictor
    from .models.zoo import get_entry

    if Path(args.source).exists():
        return load_predictor(args.source, args.model, False, verb="export", weights=args.weights)
    get_entry(args.source)  # an unknown name fails here with the close matches
    return load_predictor(None, args.source, args.pretrained, weights=args.weights)


def _cmd_export(args: argparse.Namespace) -> None:
    from .deploy import deploy
    from .export import SUFFIXES, ExportError, check_export, check_int8_format, export_model

    if args.int8:
        check_int8_format(args.format)
    elif args.calibration:
        raise ExportError("--calibration is for --int8: the images that int8 activation ranges are measured on")
    apply_max_pixels(args)
    predictor = _load_for_export(args)
    model = deploy(predictor.model) if args.deploy else predictor.model
    images = _export_images(predictor, args)
    calibration = None
    if args.int8:
        from .classification.calibration import calibration_images

        calibration, where = calibration_images(predictor, args.calibration, args.calibration_images)
        print(f"calibrating on {where}", flush=True)
    size = images.shape[-1]
    stem = Path(args.source).stem if Path(args.source).exists() else args.source
    suffix = SUFFIXES[args.format]
    output = Path(args.output or f"{stem}{'-deploy' if args.deploy else ''}{'-int8' if args.int8 else ''}{suffix}")
    start = time.perf_counter()
    export_model(model, output, args.format, size, args.opset, int8=calibration)
    files = [output, output.with_suffix(".bin")] if args.format == "openvino" else [output]
    print(f"wrote {' + '.join(map(str, files))} ({sum(f.stat().st_size for f in files) / 2**20:.1f} MiB, "
          f"{args.format}{' int8' if args.int8 else ''}, dynamic batch, "
          f"{size}×{size}) in {time.perf_counter() - start:.1f}s")
    check = check_export(predictor.model, output, args.format, images)
    agree = f"top-1 agreement {round(check.top1_agreement * len(images))}/{len(images)}"
    if args.int8:  # int8 logits are not close to fp32's: say how far they are, and claim no closeness
        print(f"checked on {len(images)} real image(s), batch sizes {check.batch_sizes}, against PyTorch fp32: "
              f"{agree}, logit cosine similarity >= {check.min_cosine:.4f}, "
              f"max |Δ| {check.max_abs_diff:.2e} (relative {check.max_rel_diff:.2e}; int8 rounding, not an error "
              f"bound); exported model {check.images_per_s:.1f} img/s")
    else:
        print(f"checked on {len(images)} real image(s), batch sizes {check.batch_sizes}: "
              f"max |Δ| {check.max_abs_diff:.2e} (relative {check.max_rel_diff:.2e}) against PyTorch, {agree}; "
              f"exported model {check.images_per_s:.1f} img/s")


def _export_images(predictor, args: argparse.Namespace):
    """The images to check the export on: --images, else the sample photos shipped with splitattn."""
    import torch

    from .data.images import open_image
    from .data.sample_photos import sample_photos

    paths = [Path(p) for p in args.images or []] or [photo.path for photo in sample_photos()]
    return torch.stack([predictor.transform(open_image(path)) for path in paths])


def _cmd_bench(args: argparse.Namespace) -> None:
    from .benchmark.suite import BenchConfig, format_table, run_bench, to_json

    def split(text: str) -> tuple[str, ...]:
        return tuple(t.strip() for t in text.split(",") if t.strip())

    config = BenchConfig(model=args.model, batch_sizes=tuple(int(b) for b in split(args.batch_sizes)),
                         image_size=args.image_size, dtypes=split(args.dtypes), layouts=split(args.layouts),
                         modes=split(args.modes), train=not args.no_train, peers=split(args.peers),
                         runtimes=split(args.runtimes), aot=not args.no_aot,
                         repeats=args.repeats, device=device_of(args).type)
    result = run_bench(config)
    print(format_table(result))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(to_json(result))
        print(f"wrote {args.json}")


def _cmd_demo(args: argparse.Namespace) -> None:
    from .demo import run_demo

    apply_max_pixels(args)
    run_demo(args.model, args.image, device_of(args))


def _cmd_convert(args: argparse.Namespace) -> None:
    if Path(args.output).exists() and not args.overwrite:
        raise CheckpointError(f"{args.output} already exists: pass --overwrite to replace it, or choose another output")
    if args.detector:
        from .detection.convert import convert_detector_file

        for note in convert_detector_file(args.source, args.output, fmt=args.to):
            print(note)
        print(f"wrote {args.output} (a splitattn detector state_dict: "
              "create_detector(KIND, BACKBONE, flavour='detectron2', pretrained=PATH))")
        return
    if args.segmenter:
        from .segmentation.convert import convert_segmenter_file

        for note in convert_segmenter_file(args.source, args.output, fmt=args.to):
            print(note)
        return
    from .models.key_converters import convert_checkpoint_file

    for note in convert_checkpoint_file(args.source, args.output, source=args.layout, fmt=args.to):
        print(note)
    print(f"wrote {args.output} (official ResNeSt keys: load with create_model(..., pretrained=PATH))")


def _cmd_explain(args: argparse.Namespace) -> None:
    from .classification.inference import load_predictor
    from .explain import plan, run_explain

    apply_max_pixels(args)
    if not args.checkpoint and not args.model:
        raise ValueError("pass --model NAME (with --pretrained for the released weights) or --checkpoint FILE")
    plan(args.source, args.out, args.overwrite)  # a wrong path or an existing output fails before any download
    predictor = load_predictor(args.checkpoint, args.model, args.pretrained, "explain", device_of(args), args.weights)
    for line in run_explain(predictor, args.source, args.out, args.overwrite, args.batch_size):
        print(line)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="splitattn", description="ResNeSt (Split-Attention Networks) models, weights and tools.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="list the zoo with measured params/GMACs beside the published figures")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style name filter, e.g. 'resnest50*'")
    p.add_argument("--tag", choices=["resnest", "fast", "baseline"], help="only models with this tag")
    p.add_argument("--pretrained", action="store_true", help="only models with released weights")
    p.add_argument("--task", choices=["classify", "detect", "segment"], default="classify",
                   help="classify: the backbone zoo (default); detect / segment: the released detectors / segmenters")
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("info", help="everything about one model: architecture, figures, eval transform, weights")
    p.add_argument("name", help="model name (see `splitattn list`); timm names such as resnest50d work")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("download", help="fetch released checkpoints into the cache (sha256-checked)")
    p.add_argument("names", nargs="+", help="model names")
    p.add_argument("--source", choices=["auto", "official", "hf-hub"], default="auto",
                   help="auto: official URLs, then the Hugging Face Hub copy (default); official; hf-hub")
    p.set_defaults(func=_cmd_download)

    p = sub.add_parser("export", help="write ONNX, OpenVINO IR or TorchScript (dynamic batch), then run it and "
                                      "compare")
    p.add_argument("source", help="zoo model name, or a checkpoint file (with --model for a plain state_dict)")
    p.add_argument("--format", choices=["onnx", "openvino", "torchscript"], required=True,
                   help="onnx (checked with onnxruntime), openvino (NAME.xml + NAME.bin, checked with OpenVINO; "
                        "pip install 'splitattn[openvino]'), torchscript")
    p.add_argument("--deploy", action="store_true", help="export the fused inference form")
    p.add_argument("--model", help="zoo model name for a plain state_dict")
    p.add_argument("--pretrained", action="store_true", help="the released weights of the named model")
    p.add_argument("--output", help="output file (default: NAME[-deploy][-int8].onnx / .xml / .pt here)")
    add_weights_argument(p)
    p.add_argument("--opset", type=positive_int, default=18, help="ONNX opset (default 18)")
    p.add_argument("--images", nargs="*", help="real images to check the export on (default: the sample photos "
                                               "shipped with splitattn)")
    p.add_argument("--int8", action="store_true",
                   help="int8 post-training static quantization (onnx: QDQ for ONNX Runtime; openvino: NNCF), "
                        "calibrated on --calibration")
    p.add_argument("--calibration", metavar="DIR",
                   help="with --int8: a folder of real training images to calibrate on (searched recursively; "
                        "default: a training checkpoint's own training data, else the few sample photos shipped with "
                        "splitattn, a poor calibration set)")
    p.add_argument("--calibration-images", type=positive_int, default=300, metavar="N",
                   help="with --int8: calibrate on N random images of them (seeded; default 300)")
    add_max_pixels_argument(p)
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("bench", help="throughput and memory: ours (plain, deploy, compiled package) vs timm, "
                                     "torchvision, ONNX Runtime and OpenVINO")
    p.add_argument("--model", default="resnest50", help="zoo model (default resnest50)")
    p.add_argument("--batch-sizes", default="16", help="comma-separated (default 16)")
    p.add_argument("--image-size", type=positive_int, default=224)
    p.add_argument("--dtypes", default="fp32,bf16", help="fp32,bf16,int8 (fp16 on GPU; int8: CPU, the quantized "
                                                          "package and the engines' int8 files)")
    p.add_argument("--layouts", default="nchw,nhwc", help="nchw,nhwc (deploy is always NHWC inside)")
    p.add_argument("--modes", default="eager,compiled", help="eager,compiled")
    p.add_argument("--peers", default="timm,torchvision", help="timm,torchvision (timm is optional)")
    p.add_argument("--runtimes", default="onnxruntime,openvino",
                   help="CPU engines run on our exported ONNX file: onnxruntime,openvino ('' for none; each optional)")
    p.add_argument("--no-aot", action="store_true", help="skip the ours-aot rows (splitattn.deploy.optimize's "
                                                        "compiled package; compiled once, then cached)")
    p.add_argument("--no-train", action="store_true", help="skip the training-step rows")
    p.add_argument("--repeats", type=positive_int, default=5, help="timed calls per row (median)")
    add_device_argument(p)
    p.add_argument("--json", help="write the result here, e.g. benchmarks/results/bench.json")
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("demo", help="the zoo table and a real photo through a model")
    p.add_argument("--model", default="resnest50", help="model name (default resnest50)")
    p.add_argument("--image", help="image file (default: a sample photo shipped with splitattn)")
    add_device_argument(p)
    add_max_pixels_argument(p)
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("convert", help="detectron2 / mmdet / mmseg / mmpretrain / PyTorch-Encoding ResNeSt checkpoint "
                                       "→ official key layout")
    p.add_argument("source", help="checkpoint file (.pth or .safetensors)")
    p.add_argument("output", help="output state_dict file (.safetensors: written as safetensors)")
    p.add_argument("--to", choices=["pth", "safetensors"], help="output format (default: from the output's extension)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.add_argument("--from", dest="layout", default="auto",
                   choices=["auto", "official", "detectron2", "mmdet", "mmpretrain"],
                   help="source key layout (default: detected)")
    p.add_argument("--detector", action="store_true",
                   help="keep the whole detector (a detectron2 or mmdet ResNeSt R-CNN file): backbone, FPN, RPN, heads")
    p.add_argument("--segmenter", action="store_true",
                   help="keep the whole segmenter (a PyTorch-Encoding DeepLabV3 / FCN or an mmseg ResNeSt file)")
    p.set_defaults(func=_cmd_convert)

    p = sub.add_parser("explain", help="split-attention maps: how each block divides attention between its splits "
                                       "(PNG + JSON)")
    p.add_argument("source", metavar="IMAGE_OR_FOLDER", help="an image, or a folder of images (summarised by "
                                                             "predicted class)")
    p.add_argument("--model", help="zoo model name (random weights unless --pretrained), or for a plain state_dict")
    p.add_argument("--pretrained", action="store_true", help="the released weights of --model")
    p.add_argument("--checkpoint", help="a classification training checkpoint (runs/…/best.pth)")
    p.add_argument("--out", default="split_attention", help="output folder (default ./split_attention)")
    p.add_argument("--overwrite", action="store_true", help="replace earlier output files of the same name")
    p.add_argument("--batch-size", type=positive_int, default=16, help="images per forward pass (default 16)")
    add_weights_argument(p)
    add_device_argument(p)
    add_max_pixels_argument(p)
    p.set_defaults(func=_cmd_explain)

    from .classification.cli import add_commands as classification_commands
    from .detection.cli import add_commands as detection_commands
    from .quantize_cli import add_command as quantize_command
    from .segmentation.cli import add_commands as segmentation_commands

    quantize_command(sub)
    classification_commands(sub)
    detect = sub.add_parser("detect", help="Faster / Mask / Cascade R-CNN with a ResNeSt-FPN backbone")
    detection_commands(detect.add_subparsers(dest="task", required=True))
    segment = sub.add_parser("segment", help="DeepLabV3 / DeepLabV3+ / FCN semantic segmentation on a dilated ResNeSt")
    segmentation_commands(segment.add_subparsers(dest="task", required=True))
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # key=value overrides may also follow --options: `train --resume auto optim.epochs=3`
        if not hasattr(args, "overrides") or any(x.startswith("-") or "=" not in x for x in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides += extra
    command = " ".join([args.command, *([args.task] if getattr(args, "task", None) else [])])
    try:
        args.func(args)
    except KeyboardInterrupt:
        print(f"splitattn {command}: interrupted", file=sys.stderr)
        return 130
    except (CheckpointError, MissingDependency, ValueError, TypeError, RuntimeError, OSError) as err:
        print(f"splitattn {command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

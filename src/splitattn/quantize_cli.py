"""`splitattn quantize`: int8 post-training quantization of a classifier into a compiled AOTInductor package,
checked against the fp32 model on a held-out split (without data: on the shipped photos, agreement only)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from tqdm import tqdm

from .cli_common import (
    add_max_pixels_argument,
    add_weights_argument,
    apply_max_pixels,
    non_negative_int,
    positive_int,
)
from .models.weights import CheckpointError


def _check_batches(predictor, args: argparse.Namespace):
    """(images, labels or None) batches to compare int8 with fp32 on, and what they are."""
    from .classification.calibration import calibration_images
    from .classification.inference import eval_batches

    data_cfg = predictor.meta.get("config", {}).get("data", {})
    if args.data or data_cfg.get("dataset") or args.dataset:
        batches = eval_batches(predictor, args.dataset, args.data, args.check_split, args.batch_size, 0)
        fashion = (args.dataset or data_cfg.get("dataset")) == "fashion_mnist"
        what = "the Fashion-MNIST test set" if fashion else f"the {args.check_split} split"
        return ((images, labels) for images, labels, _ in batches.batches()), what
    images, where = calibration_images(predictor, None, 10_000)
    return [(images, None)], where.split(" (")[0] + " (agreement only: not an accuracy figure)"


def _compare(compiled, model, batches, limit: int) -> dict:
    """Top-1 of fp32 and int8 (with labels) and their top-1 agreement over up to ``limit`` images."""
    counts = {"images": 0, "agree": 0, "fp32_correct": 0, "int8_correct": 0, "labelled": 0}
    size = compiled.input_shape[0]
    with torch.inference_mode(), tqdm(desc="checking", unit="img", total=limit or None) as bar:
        for images, labels in batches:
            if limit and counts["images"] >= limit:
                break
            if limit:
                images = images[:limit - counts["images"]]
                labels = labels[:len(images)] if labels is not None else None
            for start in range(0, len(images), size if size > 0 else len(images)):
                chunk = images[start:start + size] if size > 0 else images
                padded = torch.cat([chunk, chunk.new_zeros(size - len(chunk), *chunk.shape[1:])]) \
                    if 0 < size != len(chunk) else chunk  # a static-batch package: pad the last chunk
                int8 = compiled(padded)[:len(chunk)].argmax(1)
                fp32 = model(chunk).argmax(1)
                counts["images"] += len(chunk)
                counts["agree"] += int((int8 == fp32).sum())
                if labels is not None:
                    truth = labels[start:start + len(chunk)]
                    counts["labelled"] += len(chunk)
                    counts["fp32_correct"] += int((fp32 == truth).sum())
                    counts["int8_correct"] += int((int8 == truth).sum())
                bar.update(len(chunk))
    return counts


def _cmd_quantize(args: argparse.Namespace) -> None:
    from .classification.calibration import calibration_images
    from .cli import _load_for_export
    from .deploy.package import optimize

    apply_max_pixels(args)
    predictor = _load_for_export(args)
    stem = Path(args.source).stem if Path(args.source).exists() else args.source
    output = Path(args.output or f"{stem}-int8.pt2")
    if output.suffix != ".pt2":
        raise CheckpointError(f"an AOTInductor package is NAME.pt2: name the output {output.with_suffix('.pt2').name}")
    for existing in (output, output.with_suffix(".json"), Path(args.summary_json or output)):
        if existing.exists() and not args.overwrite:
            raise CheckpointError(f"{existing} already exists: pass --overwrite to replace it, or choose another "
                                  "output")
    images, where = calibration_images(predictor, args.calibration, args.calibration_images)
    print(f"calibrating on {where}", flush=True)
    example = images.new_zeros(args.batch_size, *images.shape[1:])
    meta = {"source": predictor.source, "classes": predictor.classes, "calibration": where}
    compiled = optimize(predictor.model, example, "int8", calibration=images, dynamic_batch=args.dynamic_batch,
                        package=output, meta=meta)
    batch = "any batch" if args.dynamic_batch else f"batch {args.batch_size}"
    how = "the same package was already there: loaded it" if compiled.from_cache else \
        f"in {compiled.compile_seconds:.0f}s (quantization and AOTInductor compile)"
    print(f"wrote {output} + {output.with_suffix('.json').name} ({output.stat().st_size / 2**20:.1f} MiB, int8, "
          f"{batch}, {'×'.join(map(str, images.shape[1:]))}) {how}; loads in {compiled.load_seconds:.2f}s")
    batches, what = _check_batches(predictor, args)
    counts = _compare(compiled, predictor.model, batches, args.check_images)
    if not counts["images"]:
        raise CheckpointError(f"no images to compare int8 with fp32 on in {what}: check --data / --check-split")
    summary = f"int8 vs fp32 on {counts['images']} images of {what}: top-1 agreement " \
              f"{100 * counts['agree'] / counts['images']:.2f}%"
    if counts["labelled"]:
        fp32, int8 = (100 * counts[k] / counts["labelled"] for k in ("fp32_correct", "int8_correct"))
        summary += f"; top-1 fp32 {fp32:.2f}%, int8 {int8:.2f}% ({int8 - fp32:+.2f} points)"
    print(summary)
    if args.summary_json:
        record = {"command": "splitattn " + " ".join(sys.argv[1:]), "package": str(output), "calibration": where,
                  "check": what, "summary": summary, "compile_seconds": round(compiled.compile_seconds, 1), **counts}
        partial = Path(args.summary_json + ".partial")
        partial.write_text(json.dumps(record, indent=1))
        partial.replace(args.summary_json)


def add_command(sub) -> None:
    p = sub.add_parser("quantize", help="int8 post-training quantization (PT2E) into a compiled package, checked "
                                        "against fp32")
    p.add_argument("source", help="a training checkpoint, a state_dict (with --model) or a zoo model name")
    p.add_argument("--model", help="zoo model name for a plain state_dict")
    p.add_argument("--pretrained", action="store_true", help="the released weights of the named model")
    add_weights_argument(p)
    p.add_argument("--calibration", metavar="DIR",
                   help="a folder of real training images to calibrate on (searched recursively; default: a training "
                        "checkpoint's own training data, else the few sample photos shipped with splitattn)")
    p.add_argument("--calibration-images", type=positive_int, default=300, metavar="N",
                   help="random images whose activation ranges set the int8 scales (seeded; default 300)")
    p.add_argument("--data", help="dataset root to compare int8 with fp32 on: ROOT/<check split>/CLASS/*.jpg, or "
                                  "the Fashion-MNIST folder (default: the checkpoint's)")
    p.add_argument("--dataset", choices=["imagefolder", "fashion_mnist"], help="default: the checkpoint's")
    p.add_argument("--check-split", default="val", help="split to compare int8 with fp32 on (default val; "
                                                        "Fashion-MNIST: its test set)")
    p.add_argument("--check-images", type=non_negative_int, default=0,
                   help="compare on at most this many (default 0: all)")
    p.add_argument("--batch-size", type=positive_int, default=16, help="the batch the package is compiled for")
    p.add_argument("--dynamic-batch", action="store_true", help="compile for any batch size")
    p.add_argument("--output", help="output package (default: NAME-int8.pt2 here, with NAME-int8.json beside it)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output (package or summary)")
    p.add_argument("--summary-json", help="write the comparison here (kept unless --overwrite)")
    add_max_pixels_argument(p)
    p.set_defaults(func=_cmd_quantize)

"""What the command-line verbs of every task share: checked numbers, --device, the train verb, its report."""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path


def _number(kind: type, low: float, inclusive: bool = True) -> Callable[[str], float]:
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'a whole number' if kind is int else 'a number'}") \
                from None
        if value < low or (value == low and not inclusive):
            raise argparse.ArgumentTypeError(f"must be {'>=' if inclusive else '>'} {low:g}, got {text}")
        return value
    return parse


positive_int = _number(int, 1)
non_negative_int = _number(int, 0)
positive_float = _number(float, 0.0, inclusive=False)


def probability(text: str) -> float:
    value = _number(float, 0.0)(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {text}")
    return value


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                        help="where to run (default auto: cuda when available, else cpu)")


def add_weights_argument(parser: argparse.ArgumentParser) -> None:
    """``--weights model|ema``: which weights of a training checkpoint to load (engine/checkpoint.py)."""
    parser.add_argument("--weights", choices=["model", "ema"], default="model",
                        help="a training checkpoint's weights to use: the model's (default) or their EMA "
                             "(runs with engine.ema_decay > 0)")


def add_max_pixels_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-pixels", type=non_negative_int, metavar="N",
                        help="largest image (width × height) to decode, 0 = no limit (default: SPLITATTN_MAX_PIXELS "
                             "or 89,478,485, PIL's guard against decompression bombs)")


def apply_max_pixels(args: argparse.Namespace) -> None:
    if getattr(args, "max_pixels", None) is not None:
        from .data.images import set_max_pixels

        set_max_pixels(args.max_pixels)


def device_of(args: argparse.Namespace):
    """``--device`` as a torch.device (auto: cuda when available); cuda without a GPU is a one-line error."""
    from .engine.distributed import pick_device

    return pick_device(args.device)


def add_train_parser(sub, example: str, func: Callable) -> argparse.ArgumentParser:
    """The ``train`` verb of a task: a YAML config, ``key=value`` overrides and shortcut flags."""
    p = sub.add_parser("train", help="train from a YAML config and key=value overrides (torchrun: several processes)")
    p.add_argument("--config", help=f"YAML file, e.g. {example}")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. optim.lr=0.01 engine.max_steps=100")
    p.add_argument("--resume", metavar="auto|PATH", help="= engine.resume ('auto': OUT_DIR/checkpoints/last.pth)")
    p.add_argument("--overwrite", action="store_true",
                   help="= engine.overwrite: start afresh in an --out-dir that holds a run (its files are replaced)")
    p.add_argument("--out-dir", help="= engine.out_dir")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="= engine.device (default auto)")
    p.add_argument("--amp", choices=["none", "bf16", "fp16"], help="= engine.amp")
    p.add_argument("--sync-bn", action="store_true", help="= engine.sync_bn=true (synchronised BN under torchrun)")
    p.add_argument("--summary-json", help="also write the run summary (metrics, wall time, files) to this file")
    p.set_defaults(func=func)
    return p


def train_overrides(args: argparse.Namespace) -> list[str]:
    """The shortcut flags as ``key=value`` overrides, before the ones given explicitly."""
    shortcuts = [f"engine.resume={args.resume}"] if args.resume is not None else []
    shortcuts += ["engine.overwrite=true"] if args.overwrite else []
    shortcuts += [f"engine.out_dir={args.out_dir}"] if args.out_dir else []
    shortcuts += [f"engine.device={args.device}"] if args.device else []
    shortcuts += [f"engine.amp={args.amp}"] if args.amp else []
    shortcuts += ["engine.sync_bn=true"] if args.sync_bn else []
    return shortcuts + list(args.overrides)


def run_training(args: argparse.Namespace, load_config: Callable, train: Callable, last_line: Callable) -> None:
    """A task's ``train`` verb: its config with the shortcut flags, the run, the report ending in
    ``last_line(cfg, summary)``."""
    cfg = load_config(args.config, train_overrides(args))
    summary = train(cfg)
    report_training(args, summary, cfg, last_line(cfg, summary))


def metrics_text(metrics: dict, keys: tuple[str, ...]) -> str:
    """``"bbox_AP 0.5070, …"`` for the ``keys`` that ``metrics`` holds as numbers."""
    return ", ".join(f"{k} {metrics[k]:.4f}" for k in keys if isinstance(metrics.get(k), float)) or "no validation set"


def report_training(args: argparse.Namespace, summary, cfg, last_line: str) -> None:
    """Print the run's files, notes and ``last_line``; write ``--summary-json`` (main process only)."""
    if not summary.main_process:
        return
    for name, path in summary.files.items():
        print(f"{name:>12}: {path}")
    for note in summary.notes:
        print(note)
    if summary.stopped:
        print(f"stopped early: {summary.stopped}")
    minutes, seconds = divmod(round(summary.wall_s), 60)
    print(f"{last_line}, wall time {minutes}m{seconds:02d}s")
    if args.summary_json:
        import torch

        machine = {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                   "torch": torch.__version__, "date": time.strftime("%Y-%m-%d")}
        record = {k: v for k, v in asdict(summary).items() if k != "metrics"}
        record["metrics"] = {k: v for k, v in summary.metrics.items() if isinstance(v, (int, float, str))}
        path = Path(args.summary_json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({**record, "command": " ".join(["splitattn", *sys.argv[1:]]), "machine": machine,
                                    "config": cfg.to_dict()}, indent=2) + "\n")


def write_json(path: str | None, record: dict) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(record, indent=2) + "\n")

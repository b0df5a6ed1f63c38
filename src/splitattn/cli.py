"""`splitattn <command>`: argument parsing only; the work lives in the library."""

from __future__ import annotations

import argparse
import json
import sys

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

    p = sub.add_parser("demo", help="the zoo table and a real photo through a model")
    p.add_argument("--model", default="resnest50", help="model name (default resnest50)")
    p.add_argument("--image", help="image file (default: a real ImageNet photo from the foolbox wheel)")
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (CheckpointError, ValueError, TypeError) as err:
        print(f"splitattn {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Write the Fashion-MNIST scenes (what `splitattn data make-scenes` did before the scenes left the library).

    .venv/bin/python -m benchmarks.scenes.make_scenes --out datasets/scenes     # 2000 train / 500 val, 128 px
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .generator import make_scenes, preview_scenes


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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
    args = p.parse_args()
    summary = make_scenes(args.out, args.train, args.val, args.size, (args.min_objects, args.max_objects),
                          (args.min_object_size, args.max_object_size), args.seed, args.fashion_root)
    for split, info in summary["splits"].items():
        print(f"{split:>5}: {info['images']} images, {info['instances']} instances → {info['ann_file']}")
    if summary["reused"]:
        print("(already complete with these parameters: reused)")
    print(f"preview: {preview_scenes(Path(args.out) / 'train', Path(args.out) / 'preview.png')}")


if __name__ == "__main__":
    main()

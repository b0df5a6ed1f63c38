"""CPU inference of our detectron2-flavoured detectors against detectron2 + the official plug-in, same weights.

For each of the four ResNeSt-50 detectors: detectron2 builds the official config (random weights with spread,
SyncBN → BN), our converter loads them into ours, and both run on the same real photos at the configs' test
resize (short side 800, long side ≤ 1333), interleaved: warm-up once, then ``--repeats`` rounds alternating
ours / detectron2 per photo. The record holds each side's median seconds per image and the ratio
(detectron2 / ours: > 1 means ours is faster). Needs `make oracles`.

    .venv/bin/python -m benchmarks.detection_vs_detectron2 [--repeats 3] [--test-size 800]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from splitattn.data.sample_photos import PHOTOS_DIR
from splitattn.detection import DETECTORS, create_detector
from splitattn.detection.convert import from_detectron2
from tests.oracles.detectron2_models import build_oracle, oracle_input
from tests.voc_photo import load_voc_photo

OUT = Path(__file__).parent / "results" / "detection_vs_detectron2.json"


def photos() -> dict[str, torch.Tensor]:
    out = {"voc2012_cafeteria": np.asarray(load_voc_photo()["rgb"], np.uint8)}
    for name in ("chelsea", "coffee"):
        out[name] = np.asarray(Image.open(PHOTOS_DIR / f"{name}.jpg").convert("RGB"))
    return {k: torch.from_numpy(v.copy()).permute(2, 0, 1).float() / 255 for k, v in out.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--test-size", type=int, default=800)
    parser.add_argument("--json", default=str(OUT))
    args = parser.parse_args(argv)
    torch.set_grad_enabled(False)
    images = photos()
    rows = []
    for kind in tqdm(DETECTORS, desc="detectors"):
        oracle, cfg = build_oracle(kind, **{"INPUT.MIN_SIZE_TEST": args.test_size})
        ours = create_detector(kind, "resnest50", 81, norm="bn", flavour="detectron2", test_size=args.test_size,
                               progress=False)
        ours.load_state_dict(from_detectron2(oracle.state_dict())[0], strict=True)
        ours.eval()
        inputs = {name: oracle_input(image, cfg) for name, image in images.items()}
        times = {"splitattn": [], "detectron2": []}
        for name, image in images.items():  # warm-up
            ours([image]), oracle([inputs[name]])
        for _ in range(args.repeats):
            for name, image in images.items():
                start = time.perf_counter()
                ours([image])
                times["splitattn"].append(time.perf_counter() - start)
                start = time.perf_counter()
                oracle([inputs[name]])
                times["detectron2"].append(time.perf_counter() - start)
        median = {k: statistics.median(v) for k, v in times.items()}
        rows.append({"kind": kind, "seconds_per_image": median,
                     "ratio_detectron2_over_ours": median["detectron2"] / median["splitattn"]})
        print(f"{kind}: ours {median['splitattn']:.2f} s, detectron2 {median['detectron2']:.2f} s, "
              f"ratio {rows[-1]['ratio_detectron2_over_ours']:.3f}")
    record = {
        "what": "CPU inference, seconds per image (median), ResNeSt-50 detectors, same weights, interleaved",
        "command": "python -m benchmarks.detection_vs_detectron2 " + " ".join(argv or []),
        "date": time.strftime("%Y-%m-%d"), "test_size": args.test_size, "repeats": args.repeats,
        "images": {k: list(v.shape[1:]) for k, v in images.items()},
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "threads": torch.get_num_threads(), "torch": torch.__version__},
        "note": "detectron2's input is resized by its own ResizeShortestEdge outside the timed call; ours resizes "
                "inside its forward (included in its time)",
        "rows": rows,
    }
    Path(args.json).write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()

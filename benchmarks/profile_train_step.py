"""Where a ResNeSt-50 training step's time goes on this machine (P4's "show where the time goes").

    .venv/bin/python benchmarks/profile_train_step.py [--lean]

One step = forward, backward, SGD; batch 16 at 224², fp32, NCHW, eager. Groups the profiler's
self-times into convolution (forward and backward), BatchNorm, elementwise/other, and writes
benchmarks/results/profile_train_step[_lean].json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F

import splitattn

GROUPS = {
    "convolution": ("convolution", "conv2d", "mkldnn_convolution"),
    "batch_norm": ("batch_norm",),
    "pooling": ("pool",),
    "optimizer": ("_foreach", "sgd"),
}


def group_of(name: str) -> str:
    lowered = name.lower()
    return next((g for g, keys in GROUPS.items() if any(k in lowered for k in keys)), "elementwise/other")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lean", action="store_true", help="the memory-efficient split-attention path")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = splitattn.create_model("resnest50", memory_efficient=args.lean).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    images, labels = torch.randn(16, 3, 224, 224), torch.randint(0, 1000, (16,))

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(images), labels).backward()
        optimizer.step()

    step()
    with torch.profiler.profile() as prof:
        step()
    totals: dict[str, float] = {}
    for event in prof.key_averages():
        if event.self_cpu_time_total > 0 and not event.key.startswith("ProfilerStep"):
            group = group_of(event.key)
            totals[group] = totals.get(group, 0.0) + event.self_cpu_time_total / 1e6
    whole = sum(totals.values())
    shares = {g: {"seconds": round(s, 3), "percent": round(100 * s / whole, 1)}
              for g, s in sorted(totals.items(), key=lambda kv: -kv[1])}
    top = [{"op": e.key, "seconds": round(e.self_cpu_time_total / 1e6, 3)}
           for e in sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:12]]
    result = {"model": "resnest50", "memory_efficient": args.lean, "batch": 16, "step_seconds": round(whole, 3),
              "groups": shares, "top_ops": top, "torch": torch.__version__, "threads": torch.get_num_threads()}
    out = Path(__file__).parent / "results" / f"profile_train_step{'_lean' if args.lean else ''}.json"
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(shares, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

"""The figures `docs/deploy.md` quotes for ``splitattn.optimize``'s packages (ResNeSt-50, 224², random weights):
compile time on an empty cache and load time from it, per dtype and batch; a call's time and minor page faults with
glibc's default malloc against ``splitattn.allocator``'s settings (each in a fresh process, interleaved rounds);
static against dynamic batch (fp32, batch 16).

    .venv/bin/python -m benchmarks.package_details [--repeats 7]

Writes ``benchmarks/results/package_details.json``. Compiles nine packages in a temporary cache: ~5 minutes on 2
cores.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OUT = Path("benchmarks/results/package_details.json")
CASES = [("fp32", 1), ("fp32", 16), ("bf16", 1), ("bf16", 16), ("int8", 1), ("int8", 16)]


def _child(spec: dict) -> dict:
    """Build (or load) one package in this process and time its calls; print JSON."""
    import resource
    import statistics

    import torch

    import splitattn

    torch.manual_seed(0)
    model = splitattn.create_model("resnest50").eval()
    example = torch.zeros(spec["batch"], 3, 224, 224)
    calibration = torch.randn(32, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    compiled = splitattn.optimize(model, example, spec["dtype"], calibration=calibration, progress=False,
                                  dynamic_batch=spec["dynamic"], keep_freed_memory=spec["keep_freed_memory"])
    images = torch.randn(spec["batch"], 3, 224, 224)
    for _ in range(3):
        compiled(images)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    times = []
    for _ in range(spec["repeats"]):
        start = time.perf_counter()
        compiled(images)
        times.append(time.perf_counter() - start)
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / spec["repeats"]
    return {"compile_seconds": round(compiled.compile_seconds, 1), "from_cache": compiled.from_cache,
            "load_seconds": round(compiled.load_seconds, 3), "ms": round(1000 * statistics.median(times), 1),
            "page_faults_per_call": round(faults), "package_mib": round(compiled.path.stat().st_size / 2**20, 1)}


def run(spec: dict, home: str) -> dict:
    env = {**os.environ, "SPLITATTN_HOME": home}
    result = subprocess.run([sys.executable, "-m", "benchmarks.package_details", "--child", json.dumps(spec)],
                            capture_output=True, text=True, env=env)
    if result.returncode:
        raise RuntimeError(result.stderr[-2000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(json.loads(args.child))))
        return
    rows = []
    with tempfile.TemporaryDirectory(prefix="splitattn-packages-") as home:
        for dtype, batch in CASES:
            spec = {"dtype": dtype, "batch": batch, "dynamic": False, "repeats": args.repeats}
            built = run({**spec, "keep_freed_memory": True}, home)  # compiles on the empty cache
            rounds = {True: [], False: []}
            for _ in range(2):  # interleaved: default malloc, kept memory, default, kept
                for keep in (False, True):
                    rounds[keep].append(run({**spec, "keep_freed_memory": keep}, home))
            row = {"dtype": dtype, "batch": batch, "compile_seconds": built["compile_seconds"],
                   "package_mib": built["package_mib"],
                   "load_seconds": [r["load_seconds"] for r in rounds[True]],
                   "ms_default_malloc": [r["ms"] for r in rounds[False]],
                   "ms_kept_memory": [r["ms"] for r in rounds[True]],
                   "page_faults_per_call_default_malloc": [r["page_faults_per_call"] for r in rounds[False]],
                   "page_faults_per_call_kept_memory": [r["page_faults_per_call"] for r in rounds[True]]}
            print(json.dumps(row), flush=True)
            rows.append(row)
        dynamic = run({"dtype": "fp32", "batch": 16, "dynamic": True, "repeats": args.repeats,
                       "keep_freed_memory": True}, home)
        static = run({"dtype": "fp32", "batch": 16, "dynamic": False, "repeats": args.repeats,
                      "keep_freed_memory": True}, home)
    record = {"command": f"python -m benchmarks.package_details --repeats {args.repeats}",
              "date": time.strftime("%Y-%m-%d"), "model": "resnest50", "image_size": 224, "rows": rows,
              "fp32_batch16_dynamic_vs_static_ms": {"dynamic": dynamic["ms"], "static": static["ms"],
                                                     "dynamic_compile_seconds": dynamic["compile_seconds"]}}
    OUT.write_text(json.dumps(record, indent=1))
    print(json.dumps(record["fp32_batch16_dynamic_vs_static_ms"]))


if __name__ == "__main__":
    main()

"""Peak training memory and step time of ResNeSt-50 / 269 with and without gradient checkpointing, beside the
memory-efficient split-attention path and both together (issue 27's figure).

    .venv/bin/python -m benchmarks.grad_checkpointing_memory [--steps 2] [--rounds 2] [--quick]

Each configuration trains in its own process (fp32, eager, SGD, random images, the training crop of the variant):
one warm-up step, then ``--steps`` timed ones. Memory is the growth of the process's peak resident set
(``ru_maxrss``) over what the built model and optimizer already held, i.e. what the steps needed: activations,
gradients, optimizer state. The configurations of a model are interleaved over ``--rounds`` rounds and each keeps
its fastest round, so the time ratios compare like with like on a shared machine. On a GPU run it under
``--device cuda``: peak is then ``torch.cuda.max_memory_allocated``.
Writes ``benchmarks/results/grad_checkpointing_memory.json``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

CONFIGS = {  # name → (grad checkpointing, memory-efficient split attention)
    "plain": (False, False),
    "checkpointing": (True, False),
    "memory_efficient": (False, True),
    "both": (True, True),
}
MODELS = {"resnest50": (224, 16), "resnest269": (320, 4)}  # training crop, batch


def _rss_mib() -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) / 1024


def worker(name: str, config: str, crop: int, batch: int, steps: int, device: str) -> dict:
    import torch.nn.functional as F

    import splitattn

    torch.manual_seed(0)
    checkpointing, lean = CONFIGS[config]
    model = splitattn.create_model(name, memory_efficient=lean).to(device).train()
    model.set_grad_checkpointing(checkpointing)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    images = torch.randn(batch, 3, crop, crop, device=device)
    labels = torch.randint(0, 1000, (batch,), device=device)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(images), labels).backward()
        optimizer.step()
        if device == "cuda":
            torch.cuda.synchronize()

    base = _rss_mib() if device == "cpu" else torch.cuda.memory_allocated() / 2**20
    step()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    seconds = (time.perf_counter() - started) / steps
    if device == "cpu":
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    else:
        peak = torch.cuda.max_memory_allocated() / 2**20
    return {"model": name, "config": config, "crop": crop, "batch": batch, "device": device,
            "step_s": round(seconds, 3), "base_mib": round(base), "peak_mib": round(peak),
            "training_mib": round(peak - base)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--quick", action="store_true", help="ResNeSt-50 only")
    parser.add_argument("--worker", nargs=4, metavar=("MODEL", "CONFIG", "CROP", "BATCH"), help=argparse.SUPPRESS)
    parser.add_argument("--out", default="benchmarks/results/grad_checkpointing_memory.json")
    args = parser.parse_args()
    if args.worker:
        name, config, crop, batch = args.worker
        print(json.dumps(worker(name, config, int(crop), int(batch), args.steps, args.device)))
        return
    rows = []
    for name, (crop, batch) in MODELS.items():
        if args.quick and name != "resnest50":
            continue
        runs: dict[str, list[dict]] = {config: [] for config in CONFIGS}
        for _ in range(args.rounds):
            for config in CONFIGS:
                command = [sys.executable, "-m", "benchmarks.grad_checkpointing_memory", "--worker", name, config,
                           str(crop), str(batch), "--steps", str(args.steps), "--device", args.device]
                run = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
                runs[config].append(run)
                print(f"{name} {config:16s} batch {batch} @ {crop}: {run['training_mib']:6d} MiB for the steps, "
                      f"{run['step_s']:.2f} s/step", flush=True)
        for done in runs.values():
            row = min(done, key=lambda r: r["step_s"])
            row["training_mib"] = max(r["training_mib"] for r in done)
            row["step_s_rounds"] = [r["step_s"] for r in done]
            rows.append(row)
    for row in rows:
        plain = next(r for r in rows if r["model"] == row["model"] and r["config"] == "plain")
        row["memory_vs_plain"] = round(row["training_mib"] / plain["training_mib"], 3)
        row["time_vs_plain"] = round(row["step_s"] / plain["step_s"], 3)
    record = {"benchmark": "grad_checkpointing_memory", "date": time.strftime("%Y-%m-%d"),
              "torch": torch.__version__, "threads": torch.get_num_threads(), "steps": args.steps,
              "rounds": args.rounds, "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

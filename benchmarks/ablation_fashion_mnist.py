"""The paper's radix / cardinality ablation (Table 2, "fast" setting) in miniature on Fashion-MNIST.

Variants 0s1x64d (plain ResNet-D block), 1s1x64d (SE-like), 2s1x64d (SK-like, ResNeSt-50-fast),
4s1x64d and 2s2x40d, each as a compact 4-stage ResNeSt (blocks 1-1-1-1, quarter widths, no max-pool)
trained with the same recipe, data, epochs and seeds: an equal budget of optimizer steps. Reports
mean ± std test top-1 over the seeds, params and MACs, writes a JSON record and a PNG.

    .venv/bin/python -m benchmarks.ablation_fashion_mnist [--seeds 3] [--epochs 4] [--train-subset 20000]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from splitattn.classification import ClassificationTask, load_classification_config  # noqa: E402
from splitattn.engine import Trainer  # noqa: E402
from splitattn.models.info import count_params  # noqa: E402

VARIANTS = {  # setting: (radix, cardinality, bottleneck width), as the paper's NsKxWd names
    "0s1x64d": (0, 1, 64),
    "1s1x64d": (1, 1, 64),
    "2s1x64d": (2, 1, 64),
    "4s1x64d": (4, 1, 64),
    "2s2x40d": (2, 2, 40),
}
RESULTS = Path(__file__).parent / "results"


def run(setting: str, seed: int, args) -> dict:
    radix, card, width = VARIANTS[setting]
    overrides = [
        "model.name=resnest14", f"model.overrides.radix={radix}", f"model.overrides.cardinality={card}",
        f"model.overrides.bottleneck_width={width}", "model.overrides.avd_first=true",
        f"model.overrides.avd={'false' if radix == 0 else 'true'}",  # ResNet-D: stride in the 3×3
        f"data.train_subset={args.train_subset}", f"optim.epochs={args.epochs}", f"engine.seed={seed}",
        f"engine.out_dir={args.out}/{setting}_seed{seed}", "engine.progress=false", "engine.tensorboard=false",
        "engine.eval_every_steps=1000000",  # evaluate once, at the end
        "engine.compile=false",  # no one-off compile per variant: equal, simple timing
        "engine.overwrite=true",
    ]
    cfg = load_classification_config("configs/fashion_mnist/resnest_cpu.yaml", overrides)
    trainer = Trainer(ClassificationTask(cfg))
    start = time.perf_counter()
    summary = trainer.train()
    model = trainer.model
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model.eval()(torch.zeros(1, 1, 28, 28))
    return {"setting": setting, "seed": seed, "top1": summary.metrics["val_top1"],
            "wall_s": time.perf_counter() - start, "params_m": count_params(model) / 1e6,
            "mmacs": counter.get_total_flops() / 2e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--train-subset", type=int, default=20000)
    parser.add_argument("--out", default="runs/ablation_fashion_mnist")
    args = parser.parse_args()
    runs = []
    for seed in range(1, args.seeds + 1):
        for setting in VARIANTS:
            runs.append(run(setting, seed, args))
            r = runs[-1]
            print(f"{setting} seed {seed}: top-1 {r['top1']:.2f}% in {r['wall_s']:.0f}s", flush=True)
    table = []
    for setting in VARIANTS:
        got = [r for r in runs if r["setting"] == setting]
        top1 = [r["top1"] for r in got]
        table.append({"setting": setting, "top1_mean": statistics.mean(top1),
                      "top1_std": statistics.stdev(top1) if len(top1) > 1 else 0.0, "top1_runs": top1,
                      "params_m": got[0]["params_m"], "mmacs": got[0]["mmacs"],
                      "wall_s_mean": statistics.mean(r["wall_s"] for r in got)})
    print(f"\n{'setting':<9}{'top-1 mean':>11}{'± std':>7}{'params M':>10}{'MMACs':>8}{'s/run':>7}  runs")
    for row in table:
        print(f"{row['setting']:<9}{row['top1_mean']:>11.2f}{row['top1_std']:>7.2f}{row['params_m']:>10.3f}"
              f"{row['mmacs']:>8.1f}{row['wall_s_mean']:>7.0f}  {', '.join(f'{t:.2f}' for t in row['top1_runs'])}")
    RESULTS.mkdir(exist_ok=True)
    record = {"benchmark": "ablation_fashion_mnist", "date": time.strftime("%Y-%m-%d"), "machine": platform.processor()
              or platform.machine(), "threads": torch.get_num_threads(), "torch": torch.__version__,
              "settings": vars(args), "table": table, "runs": runs}
    (RESULTS / "ablation_fashion_mnist.json").write_text(json.dumps(record, indent=2))
    fig, ax = plt.subplots(figsize=(7, 4))
    names = [row["setting"] for row in table]
    ax.bar(names, [row["top1_mean"] for row in table], yerr=[row["top1_std"] for row in table], capsize=4,
           color=["#999999", "#6a9fd8", "#2b6cb0", "#1a4480", "#c05621"])
    for i, row in enumerate(table):
        ax.scatter([i] * len(row["top1_runs"]), row["top1_runs"], color="black", s=10, zorder=3)
    low = min(min(row["top1_runs"]) for row in table)
    ax.set_ylim(low - 1.0, max(max(row["top1_runs"]) for row in table) + 0.5)
    ax.set(ylabel="Fashion-MNIST test top-1 (%)", title=f"radix / cardinality ablation, {args.seeds} seeds, "
           f"{args.epochs} epochs × {args.train_subset} images")
    fig.tight_layout()
    fig.savefig(RESULTS / "ablation_fashion_mnist.png", dpi=110)
    print(f"wrote {RESULTS / 'ablation_fashion_mnist.json'} and .png")


if __name__ == "__main__":
    main()

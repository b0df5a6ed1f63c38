"""P3's second half: is every fast variant faster in bf16 than in fp32? Deploy form and timm (where it has
the variant), eager, batch 16 at 224² on this machine; writes benchmarks/results/fast_variants_bf16.json.

    .venv/bin/python benchmarks/fast_variants_bf16.py
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

import splitattn
from splitattn.benchmark.suite import build, inference_rate, timm_name

OUT = Path(__file__).parent / "results" / "fast_variants_bf16.json"


def main() -> None:
    rows = []
    for name in splitattn.list_models(tag="fast"):
        weights = splitattn.create_model(name).state_dict()
        forms = ["ours-deploy"] + (["timm"] if timm_name(name) else [])
        for form in forms:
            rates = {}
            for dtype_name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
                model = build(form, name, weights).eval()
                if form == "ours-deploy":
                    model = splitattn.deploy(model)
                model = model.to(dtype).to(memory_format=torch.channels_last)
                rates[dtype_name] = round(inference_rate(model, 16, 224, dtype, "nhwc", torch.device("cpu"), 5), 2)
            ratio = round(rates["bf16"] / rates["fp32"], 3)
            rows.append({"model": name, "form": form, **rates, "bf16_over_fp32": ratio})
            print(rows[-1], flush=True)
    OUT.write_text(json.dumps({"batch": 16, "image_size": 224, "layout": "nhwc", "rows": rows,
                               "torch": torch.__version__, "threads": torch.get_num_threads()}, indent=2))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()

"""One training configuration in its own process: ``python -m splitattn.benchmark.train_probe JSON``.

Prints ``{"images_per_s": …, "peak_mb": …}``: a full step (forward, backward, SGD with momentum) and
the memory it adds on top of the model, its gradients' first allocation included (peak RSS on the
CPU, the allocator's peak on a GPU).
"""

from __future__ import annotations

import json
import sys

import torch
import torch.nn.functional as F

from .suite import build
from .timing import current_rss_mb, median_seconds, peak_rss_mb


def main(spec: dict) -> dict:
    device = torch.device(spec["device"])
    torch.manual_seed(0)
    model = build(spec["form"], spec["model"], None).to(device).train()
    images = torch.randn(spec["batch"], 3, spec["size"], spec["size"], device=device)
    labels = torch.randint(0, 1000, (spec["batch"],), device=device)
    if spec["layout"] == "nhwc":
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    amp = spec["dtype"] != "fp32"
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(spec["dtype"], torch.float32)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=dtype, enabled=amp):
            loss = F.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device) / 2**20
    else:
        base = current_rss_mb()
    seconds = median_seconds(step, device, warmup=1, repeats=spec["repeats"])
    peak = (torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else peak_rss_mb()) - base
    return {"images_per_s": spec["batch"] / seconds, "peak_mb": peak}


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))))

"""The smaller figures docs/deploy.md quotes, each measured here and written to
benchmarks/results/deploy_details.json:

1. oneDNN weight packing with and without the input shape, on 1×1 / 3×3 convolutions of ResNeSt-50
   (fused conv + bias + ReLU, NHWC, ms per call) — why ConvAct packs per input shape;
2. tensors saved for backward (MB, deduplicated by storage) in one training forward of ResNeSt-50 at
   batch 16, 224²: ours, ours with memory_efficient=True, timm.

    .venv/bin/python benchmarks/deploy_details.py
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

import splitattn
from splitattn.benchmark.timing import median_seconds

OUT = Path(__file__).parent / "results" / "deploy_details.json"
CPU = torch.device("cpu")
# (batch, size, in, out, kernel, groups): layer1 and layer3 shapes of ResNeSt-50 at 224², and layer3's
# 1×1 expansion at a small (128²) input, where packing without the shape goes wrong
CONVS = [(16, 56, 64, 256, 1, 1), (16, 56, 64, 128, 3, 2), (16, 14, 1024, 256, 1, 1), (4, 8, 256, 1024, 1, 1)]


def packing() -> list[dict]:
    rows = []
    pointwise = torch.ops.mkldnn._convolution_pointwise
    for batch, size, cin, cout, kernel, groups in CONVS:
        x = torch.randn(batch, cin, size, size).contiguous(memory_format=torch.channels_last)
        weight, bias, pad = torch.randn(cout, cin // groups, kernel, kernel), torch.randn(cout), [kernel // 2] * 2
        args = (pad, [1, 1], [1, 1], groups)
        unsized = torch.ops.mkldnn._reorder_convolution_weight(weight, *args)
        sized = torch.ops.mkldnn._reorder_convolution_weight(weight, *args, list(x.shape))
        times = {}
        with torch.inference_mode():
            for name, packed in (("plain_weight", weight), ("packed_without_shape", unsized),
                                 ("packed_with_shape", sized)):
                def call(w=packed, x=x, bias=bias, args=args):
                    return pointwise(x, w, bias, *args, "relu", [], "")
                times[name] = 1e3 * median_seconds(call, CPU, warmup=2, repeats=15)
        gflops = 2 * batch * size * size * cin // groups * cout * kernel * kernel / 1e9
        rows.append({"batch": batch, "size": size, "in": cin, "out": cout, "kernel": kernel, "groups": groups,
                     **{f"{k}_ms": round(v, 3) for k, v in times.items()},
                     "gflop_per_s_with_shape": round(gflops / times["packed_with_shape"] * 1e3, 1)})
        print(rows[-1], flush=True)
    return rows


def saved_megabytes(model: torch.nn.Module, images: torch.Tensor) -> float:
    storages: dict[int, int] = {}

    def pack(tensor):
        storages[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(images).sum()
    return round(sum(storages.values()) / 2**20, 1)


def activations() -> dict:
    import timm

    images = torch.randn(16, 3, 224, 224)
    result = {"ours": saved_megabytes(splitattn.create_model("resnest50").train(), images),
              "ours_memory_efficient": saved_megabytes(
                  splitattn.create_model("resnest50", memory_efficient=True).train(), images),
              "timm_resnest50d": saved_megabytes(timm.create_model("resnest50d").train(), images)}
    print(result, flush=True)
    return result


def main() -> None:
    result = {"packing_ms": packing(), "saved_for_backward_mb_bs16_224": activations(),
              "torch": torch.__version__, "threads": torch.get_num_threads()}
    OUT.write_text(json.dumps(result, indent=2))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()

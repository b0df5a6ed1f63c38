"""Where a ResNeSt-50 fp32 CPU forward spends its time: our compiled deploy form (the kernels
``splitattn.optimize`` packages; profiled through ``torch.compile`` with frozen weights, which emits the same
inductor kernels and lets the PyTorch profiler see the oneDNN convolutions) against ONNX Runtime on our exported
ONNX file (its own per-node profile), same weights, same batch: convolution time per (input, weight) shape on
both sides, and everything outside convolutions.

    .venv/bin/python -m benchmarks.profile_cpu_inference [--batch 16] [--runs 5]

Writes ``benchmarks/results/profile_cpu_inference.json``.
"""

from __future__ import annotations

import argparse
import collections
import json
import tempfile
import time
from pathlib import Path

import torch

import splitattn
from splitattn.allocator import keep_freed_memory
from splitattn.benchmark.runtimes import export_onnx

OUT = Path("benchmarks/results/profile_cpu_inference.json")


def _key(input_shape, weight_shape) -> str:
    return f"{list(input_shape)} * {list(weight_shape)}"


def profile_ours(model: torch.nn.Module, images: torch.Tensor, runs: int) -> tuple[float, dict[str, float]]:
    """Wall ms per forward, and convolution ms per shape (oneDNN's fused convolution calls)."""
    import torch._inductor.config as inductor_config

    with inductor_config.patch(freezing=True):
        compiled = torch.compile(splitattn.deploy(model))
        staged = images.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            for _ in range(3):
                compiled(staged)
            start = time.perf_counter()
            for _ in range(runs):
                compiled(staged)
            wall = (time.perf_counter() - start) / runs
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True) as prof:
                for _ in range(runs):
                    compiled(staged)
    convs: dict[str, float] = collections.defaultdict(float)
    for event in prof.key_averages(group_by_input_shape=True):
        if "convolution" in event.key:
            shapes = event.input_shapes
            # (input, weight, bias, …); the in-place binary form (conv + residual add) is (other, input, weight, …)
            start = 1 if event.key.endswith("_") else 0
            convs[_key(shapes[start], shapes[start + 1])] += event.self_cpu_time_total / 1e3 / runs
    return 1000 * wall, convs


def profile_onnxruntime(onnx_path: Path, images: torch.Tensor, runs: int) -> tuple[float, dict[str, float], dict]:
    """Wall ms per run, convolution ms per shape, and ms per other operator type."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.enable_profiling = True
    options.profile_file_prefix = str(onnx_path.with_name("ort_profile"))
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: images.numpy()}
    warmup = 3
    for _ in range(warmup):
        session.run(None, feed)
    start = time.perf_counter()
    for _ in range(runs):
        session.run(None, feed)
    wall = (time.perf_counter() - start) / runs
    trace = json.loads(Path(session.end_profiling()).read_text())
    nodes = [e for e in trace if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    timed = nodes[len(nodes) * warmup // (warmup + runs):]
    convs: dict[str, float] = collections.defaultdict(float)
    others: dict[str, float] = collections.defaultdict(float)
    for event in timed:
        op, ms = event["args"]["op_name"], event["dur"] / 1e3 / runs
        if "Conv" in op:
            shapes = [next(iter(s.values())) for s in event["args"]["input_type_shape"]]  # X, W, (B), (Z: the add)
            convs[_key(shapes[0], shapes[1])] += ms
        else:
            others[op] += ms
    return 1000 * wall, convs, others


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    keep_freed_memory()  # as optimize() does: no page faults for fresh activations (both sides measured with it)
    torch.manual_seed(0)
    model = splitattn.create_model("resnest50").eval()
    images = torch.randn(args.batch, 3, 224, 224)
    with tempfile.TemporaryDirectory() as tmp:
        ort_wall, ort_convs, ort_others = profile_onnxruntime(export_onnx(model, 224, tmp), images, args.runs)
    ours_wall, ours_convs = profile_ours(model, images, args.runs)
    shapes = sorted(set(ours_convs) | set(ort_convs), key=lambda k: -max(ours_convs.get(k, 0), ort_convs.get(k, 0)))
    per_shape = [{"shape": k, "ours_ms": round(ours_convs.get(k, 0.0), 1),
                  "onnxruntime_ms": round(ort_convs.get(k, 0.0), 1)} for k in shapes]
    ours_conv, ort_conv = sum(ours_convs.values()), sum(ort_convs.values())
    record = {
        "command": f"python -m benchmarks.profile_cpu_inference --batch {args.batch} --runs {args.runs}",
        "date": time.strftime("%Y-%m-%d"), "model": "resnest50", "batch": args.batch, "dtype": "fp32",
        "threads": torch.get_num_threads(), "torch": torch.__version__,
        "ours_compiled_deploy": {"wall_ms": round(ours_wall, 1), "convolution_ms": round(ours_conv, 1),
                                 "outside_convolution_ms": round(ours_wall - ours_conv, 1)},
        "onnxruntime": {"wall_ms": round(ort_wall, 1), "convolution_ms": round(ort_conv, 1),
                        "outside_convolution_ms": round(ort_wall - ort_conv, 1),
                        "other_operators_ms": {k: round(v, 1) for k, v in sorted(ort_others.items(),
                                                                                  key=lambda kv: -kv[1])}},
        "convolutions_by_shape": per_shape,
    }
    OUT.write_text(json.dumps(record, indent=1))
    print(json.dumps({k: v for k, v in record.items() if k != "convolutions_by_shape"}, indent=1))
    for row in per_shape[:12]:
        print(f"{row['shape']:48} ours {row['ours_ms']:6.1f} ms  onnxruntime {row['onnxruntime_ms']:6.1f} ms")


if __name__ == "__main__":
    main()

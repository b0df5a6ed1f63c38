"""On a GPU: deploy() of a CUDA model equals it; the memory-efficient path's float64 gradients equal the
plain path's on CUDA. Prints JSON (run by hand on a GPU machine; CI has none)."""

from __future__ import annotations

import json

import torch

import splitattn


def main() -> None:
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    model = splitattn.create_model("resnest50").eval().cuda()
    x = torch.randn(8, 3, 224, 224, device="cuda")
    with torch.inference_mode():
        reference, fused = model(x), splitattn.deploy(model)(x)
    deploy_rel = float((reference - fused).abs().max() / reference.abs().max())
    torch.manual_seed(0)
    plain = splitattn.create_model("resnest14", num_classes=10).double().cuda().train()
    lean = splitattn.create_model("resnest14", num_classes=10, memory_efficient=True).double().cuda().train()
    lean.load_state_dict(plain.state_dict())
    images = torch.randn(4, 3, 64, 64, dtype=torch.float64, device="cuda")
    plain(images).pow(2).mean().backward()
    lean(images).pow(2).mean().backward()
    scale = max(float(p.grad.abs().max()) for p in plain.parameters())
    grad_rel = max(float((p.grad - q.grad).abs().max()) / scale for p, q in zip(plain.parameters(), lean.parameters()))
    print(json.dumps({"device": torch.cuda.get_device_name(), "deploy_rel_fp32": deploy_rel,
                      "lean_grad_rel_fp64": grad_rel}))


if __name__ == "__main__":
    main()

"""DCNv2 against detectron2's own CUDA deformable convolution: the check a CPU-only CI cannot run.

    python -m benchmarks.dcn_cuda_check --out benchmarks/results/dcn_cuda_check.json

Needs a GPU and detectron2 built with CUDA (``make oracles`` on a CUDA machine builds its ``_C`` with the
deformable ops; on the CPU-only build they raise). Three figures, each a max relative difference:

1. ``op``: ``detectron2.layers.ModulatedDeformConv`` (CUDA) against ``splitattn.layers.DeformConv2d``
   (torchvision's ``deform_conv2d``, CUDA and CPU) on the same input, offsets (±3 px) and mask, forward and the
   gradients of input, offsets, mask and weight; float32, TF32 off;
2. ``detector``: the official plug-in's DCN Faster R-CNN (``faster_rcnn_ResNeSt_50_FPN_dcn``, SyncBN → BN) on
   CUDA against ours on CUDA with the converted weights: FPN levels and the detections (paired as the tests pair);
3. ``ours_cpu_vs_cuda``: our detector's FPN levels on CPU against CUDA.

``--cpu-reference`` runs the same code on the CPU with detectron2's op replaced by the equation written out
(``tests/oracles/dcn_reference.py``), as the tests do: it checks the script, not the CUDA kernel.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from splitattn.detection import create_detector
from splitattn.detection.convert import from_detectron2
from splitattn.layers import DeformConv2d
from tests.oracles.dcn_reference import detectron2_modulated_deform_conv
from tests.oracles.detectron2_models import build_oracle, oracle_input, require_detectron2
from tests.oracles.matching import match
from tests.voc_photo import photo_tensor


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double().cpu() - b.double().cpu()).abs().max() / b.double().abs().max().clamp_min(1e-30))


def op_check(device: str) -> dict:
    from detectron2.layers import ModulatedDeformConv

    g = torch.Generator().manual_seed(0)
    theirs = ModulatedDeformConv(64, 128, 3, stride=2, padding=1, dilation=1, groups=2, deformable_groups=2,
                                 bias=False).to(device)
    ours = DeformConv2d(64, 128, 3, 2, 1, 1, groups=2, deform_groups=2).to(device)
    with torch.no_grad():
        ours.weight.copy_(torch.randn(ours.weight.shape, generator=g) * 0.05)
        theirs.weight.copy_(ours.weight)
    x = torch.randn(2, 64, 33, 41, generator=g).to(device).requires_grad_(True)
    raw = (torch.randn(2, 54, 17, 21, generator=g) * 1.5).to(device).requires_grad_(True)
    upstream = torch.randn(2, 128, 17, 21, generator=g).to(device)

    offset_x, offset_y, mask = torch.chunk(raw, 3, dim=1)  # the plug-in's split (resnest/d2/splat.py)
    t_out = theirs(x, torch.cat((offset_x, offset_y), dim=1), mask.sigmoid())
    t_grads = torch.autograd.grad(t_out, (x, raw, theirs.weight), upstream)
    o_out = ours(x, raw)
    o_grads = torch.autograd.grad(o_out, (x, raw, ours.weight), upstream)
    result = {"forward": rel(o_out, t_out)}
    result.update({f"grad_{n}": rel(a, b) for n, a, b in zip(("input", "offset_mask", "weight"), o_grads, t_grads)})
    if device != "cpu":  # torchvision's CPU kernel against the same CUDA reference
        cpu = DeformConv2d(64, 128, 3, 2, 1, 1, groups=2, deform_groups=2)
        cpu.load_state_dict(ours.state_dict())
        result["forward_torchvision_cpu"] = rel(cpu(x.detach().cpu(), raw.detach().cpu()), t_out.detach())
    return result


def detector_check(device: str) -> dict:
    settings = {"INPUT.MIN_SIZE_TEST": 480, "MODEL.ROI_HEADS.SCORE_THRESH_TEST": 0.0, "MODEL.DEVICE": device}
    oracle, cfg = build_oracle("faster_rcnn_dcn", **settings)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # offsets away from zero, so their layout matters
        for name, p in oracle.named_parameters():
            if "conv2_offset" in name:
                p.copy_((torch.randn(p.shape, generator=g) * (0.02 if name.endswith("weight") else 0.5)).to(p.device))
    ours = create_detector("faster_rcnn", "resnest50", 81, norm="bn", score_thresh=0.0, test_size=480, min_size=480,
                           deform_stages=(2, 3, 4), deform_groups=2, progress=False)
    ours.load_state_dict(from_detectron2({k: v.cpu() for k, v in oracle.state_dict().items()})[0], strict=True)
    ours.eval()
    image = photo_tensor()
    out: dict = {}
    with torch.no_grad():
        inputs = oracle_input(image, cfg)
        images = oracle.preprocess_image([inputs])
        t_features = oracle.backbone(images.tensor)
        batch, _ = ours.normalize_and_pad([ours.resize(image)])
        cpu_features = ours.features(batch)
        ours.to(device)
        start = time.perf_counter()
        features = ours.features(batch.to(device))
        out["ours_features_s"] = time.perf_counter() - start
        levels = ("p2", "p3", "p4", "p5", "p6")
        out["fpn_vs_detectron2"] = {lv: rel(f, t_features[lv]) for lv, f in zip(levels, features)}
        out["ours_cpu_vs_cuda"] = {lv: rel(c, f) for lv, c, f in zip(levels, cpu_features, features)}
        theirs = oracle([inputs])[0]["instances"].to("cpu")
        mine = {k: v.cpu() for k, v in ours([image.to(device)])[0].items()}
    report = match(mine, {"boxes": theirs.pred_boxes.tensor, "scores": theirs.scores,
                          "labels": theirs.pred_classes + 1})
    out["detections"] = report.line()
    out["detections_ok"] = report.rate >= 0.99 and report.failures == 0
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="benchmarks/results/dcn_cuda_check.json")
    parser.add_argument("--cpu-reference", action="store_true",
                        help="run on the CPU with detectron2's op replaced by the written-out equation")
    args = parser.parse_args()
    require_detectron2()
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    if args.cpu_reference:
        import detectron2.layers.deform_conv as d2_deform

        d2_deform.modulated_deform_conv = detectron2_modulated_deform_conv
        device = "cpu"
    elif not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run on a GPU machine, or pass --cpu-reference to check the script")
    else:
        device = "cuda"
    record = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu (equation as detectron2's op)",
              "torch": torch.__version__, "op": op_check(device), "detector": detector_check(device)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()

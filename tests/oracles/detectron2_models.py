"""detectron2 + the official ResNeSt plug-in as a test oracle: build the paper's detectors on the CPU.

Test-only; the library never imports detectron2. The oracle sources sit in ``../shared/oracles`` (see its
README); ``make oracles`` builds detectron2 into the venv. SyncBN becomes BN (same parameter names): there is
one process here.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

ORACLES = Path(__file__).resolve().parents[2].parent / "shared" / "oracles"
PLUGIN_ROOT = ORACLES / "ResNeSt"
CONFIGS = PLUGIN_ROOT / "d2" / "configs"

# our kind → the official config of its ResNeSt-50 row
CONFIG_OF = {
    "faster_rcnn": "COCO-Detection/faster_rcnn_ResNeSt_50_FPN_syncbn_range-scale_1x.yaml",
    "cascade_rcnn": "COCO-Detection/faster_cascade_rcnn_ResNeSt_50_FPN_syncbn_range-scale-1x.yaml",
    "mask_rcnn": "COCO-InstanceSegmentation/mask_rcnn_ResNeSt_50_FPN_syncBN_1x.yaml",
    "cascade_mask_rcnn": "COCO-InstanceSegmentation/mask_cascade_rcnn_ResNeSt_50_FPN_syncBN_1x.yaml",
    # the DCN row: modulated DCNv2 on res3-res5, 2 deformable groups (the op is CUDA-only: tests swap it)
    "faster_rcnn_dcn": "COCO-Detection/faster_rcnn_ResNeSt_50_FPN_dcn_syncbn_range-scale_1x.yaml",
    # Panoptic FPN: the base ResNeSt panoptic config (mask R-CNN, GN semantic head) and the paper's cascade one
    # (its ResNeSt-200 config; tests set MODEL.RESNETS.DEPTH 50 for CPU time)
    "panoptic_fpn": "COCO-PanopticSegmentation/ResNeSt-Base-Panoptic-FPN.yaml",
    "cascade_panoptic_fpn": "COCO-PanopticSegmentation/panoptic_ResNeSt_200_FPN_syncBN_tricks_3x.yaml",
}


def require_detectron2():
    """Import detectron2 and the plug-in, or fail with the command that installs them."""
    try:
        import detectron2  # noqa: F401
    except ImportError as err:
        raise RuntimeError("detectron2 (test oracle) is not installed: run `make oracles`") from err
    if not PLUGIN_ROOT.is_dir():
        raise RuntimeError(f"missing {PLUGIN_ROOT}: the oracle sources must sit in ../shared/oracles")
    if str(PLUGIN_ROOT) not in sys.path:
        sys.path.insert(0, str(PLUGIN_ROOT))
    # the PyPI `resnest` package (the classification oracle) has the same top-level name and may be imported
    # first: let `resnest.d2` be found in the official repository's package as well
    package = sys.modules.get("resnest")
    plugin_package = str(PLUGIN_ROOT / "resnest")
    if package is not None and plugin_package not in list(getattr(package, "__path__", [])):
        package.__path__.append(plugin_package)


def oracle_cfg(config: str, **overrides):
    """The official config on the CPU, no weights file, SyncBN → BN, plus ``overrides`` (dotted keys)."""
    require_detectron2()
    from detectron2.config import get_cfg
    from resnest.d2 import add_resnest_config

    cfg = get_cfg()
    add_resnest_config(cfg)
    cfg.merge_from_file(str(CONFIGS / config))
    cfg.MODEL.DEVICE, cfg.MODEL.WEIGHTS = "cpu", ""
    for section in ("RESNETS", "FPN", "ROI_BOX_HEAD", "ROI_MASK_HEAD", "SEM_SEG_HEAD"):
        if getattr(cfg.MODEL, section).NORM == "SyncBN":
            getattr(cfg.MODEL, section).NORM = "BN"
    cfg.merge_from_list([x for kv in overrides.items() for x in (kv[0], str(kv[1]))])
    cfg.freeze()
    return cfg


def randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random weights with spread: BN statistics and affines away from identity, predictors not near zero
    (detectron2's init gives every class ~1/81 and every proposal the same score: all ties)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, torch.nn.BatchNorm2d) or type(module).__name__ == "FrozenBatchNorm2d":
                n = module.num_features
                module.weight.copy_(torch.rand(n, generator=g) * 0.5 + 0.75)
                module.bias.copy_(torch.randn(n, generator=g) * 0.1)
                module.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                module.running_var.copy_(torch.rand(n, generator=g) * 0.5 + 0.75)
            elif name.endswith(("cls_score", "objectness_logits")):
                module.weight.normal_(0, 0.05, generator=g)
                module.bias.normal_(0, 0.5, generator=g)
            elif name.endswith(("bbox_pred", "anchor_deltas")) or name.endswith("mask_head.predictor"):
                module.weight.normal_(0, 0.01, generator=g)
    return model


def build_oracle(kind: str, seed: int = 0, **overrides):
    """(detectron2 model in eval mode with random weights, cfg)."""
    from detectron2.modeling import build_model

    cfg = oracle_cfg(CONFIG_OF[kind], **overrides)
    torch.manual_seed(seed)
    return randomize(build_model(cfg), seed).eval(), cfg


def oracle_input(image01: torch.Tensor, cfg) -> dict:
    """detectron2's test input for a [0, 1] CHW image: 0-255, resized by its own ``ResizeShortestEdge``."""
    from detectron2.data import transforms as T

    hwc = (image01 * 255.0).permute(1, 2, 0).contiguous().numpy()
    resize = T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)
    resized = resize.get_transform(hwc).apply_image(hwc)
    chw = torch.as_tensor(np.ascontiguousarray(resized.transpose(2, 0, 1)))
    return {"image": chw, "height": image01.shape[1], "width": image01.shape[2]}

"""mmdetection 3.3 as a test oracle for the mmdet-layout ResNeSt detectors, on the CPU without compiled ops.

Test-only; the library never imports mmdet. ``mmcv-lite`` has no ``mmcv._ext`` (the compiled ops), and
``import mmdet.models`` needs one: :func:`install_ext_stand_in` registers a small module whose ``nms`` and
``roi_align_forward`` (average pooling) call torchvision's ops — the two inference needs — and whose every
other op raises. Configs are mmdet's own (``mmdet/.mim/configs/resnest``); SyncBN → BN (same parameter names).
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import torch
import torchvision.ops

CONFIG_OF = {
    "faster_rcnn": "faster-rcnn_s50_fpn_syncbn-backbone+head_ms-range-1x_coco.py",
    "mask_rcnn": "mask-rcnn_s50_fpn_syncbn-backbone+head_ms-1x_coco.py",
    "cascade_rcnn": "cascade-rcnn_s50_fpn_syncbn-backbone+head_ms-range-1x_coco.py",
    "cascade_mask_rcnn": "cascade-mask-rcnn_s50_fpn_syncbn-backbone+head_ms-1x_coco.py",
}


def _nms(boxes, scores, iou_threshold, offset=0):
    if offset != 0:
        raise NotImplementedError("the mmcv._ext stand-in only has nms with offset 0 (mmdet's default)")
    return torchvision.ops.nms(boxes, scores, iou_threshold)


def _roi_align_forward(input, rois, output, argmax_y, argmax_x, *, aligned_height, aligned_width, spatial_scale,
                       sampling_ratio, pool_mode, aligned):
    if pool_mode != 1:
        raise NotImplementedError("the mmcv._ext stand-in only has average RoIAlign")
    output.copy_(torchvision.ops.roi_align(input, rois, (aligned_height, aligned_width), spatial_scale,
                                           sampling_ratio, aligned))


def install_ext_stand_in() -> None:
    """Register ``mmcv._ext`` (once): torchvision's nms / roi_align, every other op raising when called."""
    if "mmcv._ext" in sys.modules:
        return
    ext = types.ModuleType("mmcv._ext")
    ext.nms, ext.roi_align_forward = _nms, _roi_align_forward

    def missing(name):
        def op(*args, **kwargs):
            raise NotImplementedError(f"mmcv._ext.{name} is not in the test stand-in (mmcv-lite has no compiled ops)")
        return op

    ext.__getattr__ = lambda name: missing(name) if not name.startswith("__") else None
    sys.modules["mmcv._ext"] = ext


def require_mmdet():
    try:
        import mmdet  # noqa: F401
        import mmengine  # noqa: F401
    except ImportError as err:
        raise RuntimeError("mmdet (test oracle) is not installed: run `make oracles`") from err
    install_ext_stand_in()


def _bn(cfg):
    """SyncBN → BN everywhere in a config dict (one process here)."""
    if isinstance(cfg, dict):
        return {k: ({**v, "type": "BN"} if k == "norm_cfg" and isinstance(v, dict) and v.get("type") == "SyncBN"
                    else _bn(v)) for k, v in cfg.items()}
    if isinstance(cfg, list):
        return [_bn(v) for v in cfg]
    return cfg


def build_mmdet(kind: str, seed: int = 0, config: str | None = None):
    """(mmdet detector in eval mode with random weights, its mmengine Config)."""
    require_mmdet()
    import mmdet
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.config import Config, ConfigDict

    from tests.oracles.detectron2_models import randomize

    register_all_modules()
    path = Path(mmdet.__file__).parent / ".mim" / "configs" / "resnest" / (config or CONFIG_OF[kind])
    cfg = Config.fromfile(str(path))
    model_cfg = ConfigDict(_bn(cfg.model.to_dict()))
    model_cfg["backbone"]["init_cfg"] = None
    torch.manual_seed(seed)
    model = MODELS.build(model_cfg)

    return randomize(model, seed).eval(), cfg


def mmdet_predict(model, image01: torch.Tensor, resized_0_255: torch.Tensor):
    """mmdet's test forward on an image we resized (so both sides see the same pixels): boxes in input pixels."""
    from mmdet.structures import DetDataSample

    h, w = image01.shape[1:]
    new_h, new_w = resized_0_255.shape[1:]
    sample = DetDataSample(metainfo={"img_shape": (new_h, new_w), "ori_shape": (h, w),
                                     "scale_factor": (new_w / w, new_h / h), "pad_shape": (new_h, new_w)})
    # the data preprocessor converts BGR → RGB (bgr_to_rgb=True), so hand it BGR
    data = {"inputs": [resized_0_255.flip(0)], "data_samples": [sample]}
    with torch.no_grad():
        return model.test_step(data)[0].pred_instances


__all__ = ["CONFIG_OF", "build_mmdet", "install_ext_stand_in", "mmdet_predict", "np", "require_mmdet"]

"""mmsegmentation 1.2.2 as a test oracle for its ResNeSt-101-D8 segmenters, on the CPU without compiled ops.

Test-only; the library never imports mmseg. It shares mmdet's ``mmcv-lite`` set-up (the ``mmcv._ext`` stand-in of
:mod:`tests.oracles.mmdet_models`). Configs are mmseg's own (``mmseg/.mim/configs/resnest``); SyncBN → BN (same
parameter names: one process here); the backbone's ``pretrained`` ImageNet link is dropped (random weights).
"""

from __future__ import annotations

from pathlib import Path

import torch

from tests.oracles.mmdet_models import _bn, install_ext_stand_in

# (kind, dataset) → the config of that checkpoint
CONFIGS = {
    ("fcn", "ade20k"): "resnest_s101-d8_fcn_4xb4-160k_ade20k-512x512.py",
    ("pspnet", "ade20k"): "resnest_s101-d8_pspnet_4xb4-160k_ade20k-512x512.py",
    ("deeplabv3", "ade20k"): "resnest_s101-d8_deeplabv3_4xb4-160k_ade20k-512x512.py",
    ("deeplabv3plus", "ade20k"): "resnest_s101-d8_deeplabv3plus_4xb4-160k_ade20k-512x512.py",
    ("fcn", "cityscapes"): "resnest_s101-d8_fcn_4xb2-80k_cityscapes-512x1024.py",
    ("pspnet", "cityscapes"): "resnest_s101-d8_pspnet_4xb2-80k_cityscapes512x1024.py",
    ("deeplabv3", "cityscapes"): "resnest_s101-d8_deeplabv3_4xb2-80k_cityscapes-512x1024.py",
    ("deeplabv3plus", "cityscapes"): "resnest_s101-d8_deeplabv3plus_4xb2-80k_cityscapes-512x1024.py",
}


def require_mmseg():
    try:
        import mmengine  # noqa: F401
        import mmseg  # noqa: F401
    except ImportError as err:
        raise RuntimeError("mmsegmentation (test oracle) is not installed: run `make oracles`") from err
    install_ext_stand_in()


def mmseg_config(kind: str, dataset: str):
    """mmseg's own config of the ``(kind, dataset)`` ResNeSt-101 checkpoint (an mmengine ``Config``)."""
    require_mmseg()
    import mmseg
    from mmengine.config import Config

    return Config.fromfile(str(Path(mmseg.__file__).parent / ".mim" / "configs" / "resnest" / CONFIGS[kind, dataset]))


def build_mmseg(kind: str, dataset: str = "ade20k", seed: int = 0, depth: int | None = None):
    """(mmseg EncoderDecoder in eval mode with random weights and BN spread, its Config). ``depth`` overrides the
    backbone depth (50 for a smaller model with the same code path)."""
    require_mmseg()
    from mmengine.config import ConfigDict
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules

    from tests.oracles.detectron2_models import randomize
    from tests.oracles.encoding_models import spread_classifiers

    register_all_modules()
    cfg = mmseg_config(kind, dataset)
    model_cfg = ConfigDict(_bn(cfg.model.to_dict()))
    model_cfg.pop("pretrained", None)
    model_cfg["backbone"]["init_cfg"] = None
    if depth is not None:
        model_cfg["backbone"]["depth"] = depth
        model_cfg["backbone"]["stem_channels"] = 64 if depth == 50 else 128
    torch.manual_seed(seed)
    model = MODELS.build(model_cfg)
    return spread_classifiers(randomize(model, seed), cfg.model.decode_head.num_classes, seed).eval(), cfg


def mmseg_logits(model, image01: torch.Tensor) -> torch.Tensor:
    """mmseg's whole-image logits at the input size (data preprocessor → ``encode_decode``) for a [0, 1] RGB image."""
    from mmseg.structures import SegDataSample

    h, w = image01.shape[-2:]
    sample = SegDataSample(metainfo={"img_shape": (h, w), "ori_shape": (h, w), "pad_shape": (h, w)})
    # the data preprocessor converts BGR → RGB (bgr_to_rgb=True) and normalises 0-255 pixels: hand it BGR 0-255
    data = model.data_preprocessor({"inputs": [(image01 * 255).flip(0)], "data_samples": [sample]}, False)
    with torch.no_grad():
        return model.encode_decode(data["inputs"], [s.metainfo for s in data["data_samples"]])


__all__ = ["CONFIGS", "build_mmseg", "mmseg_config", "mmseg_logits", "require_mmseg"]

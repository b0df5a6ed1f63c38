"""PyTorch-Encoding (PyPI ``torch-encoding==1.2.1``) as a test oracle for the paper's DeepLabV3 / FCN segmenters.

Test-only; the library never imports ``encoding``. Importing it JIT-compiles C++ ops (``encoding.lib``) that do
not build against torch 2.14; the DeepLab / FCN + ResNeSt path never calls them, so an empty ``encoding.lib``
is registered first. ``BaseNet`` always asks for ImageNet weights (``get_backbone(..., pretrained=True)``): the
oracle builds with ``pretrained=False`` and random weights instead. ``make oracles`` installs it.
"""

from __future__ import annotations

import sys
import types

import torch

DATASET_OF = {150: "ade20k", 59: "pcontext"}
MODEL_OF = {"deeplabv3": "deeplab", "fcn": "fcn"}


def require_encoding():
    """Import ``encoding`` with the stand-ins above, or fail with the command that installs it."""
    if "encoding.lib" not in sys.modules:
        sys.modules["encoding.lib"] = types.ModuleType("encoding.lib")
    try:
        import encoding
        import encoding.models.sseg.base as base
    except ImportError as err:
        raise RuntimeError("torch-encoding (test oracle) is not installed: run `make oracles`") from err
    if not getattr(base.get_backbone, "_no_download", False):
        original = base.get_backbone

        def get_backbone(name, **kwargs):
            kwargs["pretrained"] = False
            return original(name, **kwargs)

        get_backbone._no_download = True
        base.get_backbone = get_backbone
    return encoding


def build_encoding(kind: str, backbone: str = "resnest50", num_classes: int = 150, seed: int = 0):
    """PyTorch-Encoding's segmenter (``get_segmentation_model``) in eval mode with random weights (BN spread)."""
    encoding = require_encoding()
    from tests.oracles.detectron2_models import randomize

    torch.manual_seed(seed)
    model = encoding.models.get_segmentation_model(MODEL_OF[kind], dataset=DATASET_OF[num_classes],
                                                   backbone=backbone, aux=True)
    return spread_classifiers(randomize(model, seed), num_classes, seed).eval()


def spread_classifiers(model: torch.nn.Module, num_classes: int, seed: int = 0) -> torch.nn.Module:
    """The 1×1 classifiers at std 0.05 (default init gives near-equal logits: one class wins everywhere)."""
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Conv2d) and module.out_channels == num_classes:
                module.weight.normal_(0, 0.05, generator=g)
    return model


def encoding_multi_eval(model, normalised: torch.Tensor, scales, flip: bool = True) -> torch.Tensor:
    """Encoding's ``MultiEvalModule.forward`` on the CPU (its code calls ``.cuda()``; that is all that changes)."""
    require_encoding()
    import encoding.models.sseg.base as base

    evaluator = base.MultiEvalModule.__new__(base.MultiEvalModule)
    torch.nn.Module.__init__(evaluator)
    evaluator.module, evaluator.nclass = model, model.nclass
    evaluator.base_size, evaluator.crop_size = model.base_size, model.crop_size
    evaluator.scales, evaluator.flip = list(scales), flip
    original_cuda = torch.Tensor.cuda
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    try:
        with torch.no_grad():
            return base.MultiEvalModule.forward(evaluator, normalised)
    finally:
        torch.Tensor.cuda = original_cuda


__all__ = ["build_encoding", "encoding_multi_eval", "require_encoding", "spread_classifiers"]

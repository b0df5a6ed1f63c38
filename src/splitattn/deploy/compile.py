"""``torch.compile`` for inference: frozen weights (constant-folded into the graph) and a static shape."""

from __future__ import annotations

import torch
from torch import nn


def compile_for_inference(model: nn.Module, dynamic: bool = False) -> nn.Module:
    """Compile ``model`` (eval mode) with inductor's freezing; the first call pays the compile time.

    Freezing applies under ``torch.inference_mode()`` / ``torch.no_grad()``, as in eval and predict.
    """
    import torch._inductor.config as inductor_config

    if model.training:
        raise ValueError("compile_for_inference() freezes weights: call model.eval() first")
    inductor_config.freezing = True
    return torch.compile(model, dynamic=dynamic)

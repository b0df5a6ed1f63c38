"""Int8 post-training static quantization through PyTorch 2 Export (PT2E), for the CPU.

The flow is PyTorch's own (https://docs.pytorch.org/ao/stable/tutorials_source/pt2e_quant_x86_inductor.html):
``torch.export`` → ``prepare_pt2e`` with torchao's ``X86InductorQuantizer`` (per-channel int8 weights, uint8
activations with observed ranges) → calibration on real images → ``convert_pt2e``. The result is a graph of
quantize / dequantize pairs around fp32 ops; inductor (``optimize()`` / ``compile_for_inference()``) lowers each
pattern to oneDNN's int8 kernels. Run eagerly it is slow and only shows the numerics.

BatchNorm is folded into the convolutions by ``prepare_pt2e``, so the trained model goes in as it is: not the
``deploy()`` form, whose fused modules hide the convolutions from the quantizer's patterns.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

import torch
from torch import nn
from tqdm import tqdm

from ..optional import require


class QuantizeError(ValueError):
    """The model or the calibration data cannot be quantized as asked."""


def calibration_batches(calibration: torch.Tensor | Iterable[torch.Tensor], batch_size: int) -> list[torch.Tensor]:
    if isinstance(calibration, torch.Tensor):
        if calibration.dim() != 4 or not len(calibration):
            raise QuantizeError(f"calibration images must be a non-empty (N, C, H, W) tensor, got "
                                f"{tuple(calibration.shape)}")
        return list(calibration.split(batch_size))
    batches = [b[0] if isinstance(b, (tuple, list)) else b for b in calibration]  # (images, labels) loaders too
    if not batches:
        raise QuantizeError("no calibration images: give a few hundred real training images")
    return batches


def quantize_int8(model: nn.Module, calibration: torch.Tensor | Iterable[torch.Tensor], batch_size: int = 32,
                  progress: bool = True) -> torch.fx.GraphModule:
    """``model`` (eval mode, fp32) quantized to int8 after observing ``calibration``: an (N, C, H, W) tensor of
    preprocessed real images, or an iterable of such batches (or of ``(images, labels)``).

    Returns the converted graph (dynamic batch); ``model`` itself is left as it was. :func:`splitattn.optimize`
    with ``dtype="int8"`` does this and compiles the result to int8 kernels."""
    require("torchao", "int8 quantization")
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as x86

    if model.training:
        raise QuantizeError("quantization calibrates an inference model: call model.eval() first")
    batches = calibration_batches(calibration, batch_size)
    example = batches[0][:2].float().expand(2, *batches[0].shape[1:])  # a batch of one would become a constant
    batch = torch.export.Dim("batch", min=1, max=4096)
    with torch.no_grad():
        graph = torch.export.export(copy.deepcopy(model).float(), (example,), dynamic_shapes=({0: batch},)).module()
    quantizer = x86.X86InductorQuantizer()
    # per-channel symmetric int8 weights, uint8 activations from histogram observers (the quantizer's default)
    quantizer.set_global(x86.get_default_x86_inductor_quantization_config())
    prepared = prepare_pt2e(graph, quantizer)
    with torch.no_grad():
        for images in tqdm(batches, desc="calibrating", unit="batch", disable=not progress):
            prepared(images.float().contiguous())
    return convert_pt2e(prepared)

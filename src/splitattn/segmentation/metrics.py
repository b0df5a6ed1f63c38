"""Segmentation metrics (pixel accuracy, IoU / mIoU) and multi-scale + flip inference.

:class:`ConfusionMatrix` accumulates ``matrix[target, pred]`` over the labelled pixels (``ignore_index``
pixels are skipped, whatever was predicted there); pixAcc = trace / labelled pixels; IoU_c =
TP / (TP + FP + FN), NaN for a class absent from both prediction and target; mIoU = mean over the
non-NaN classes (mmseg's nanmean). PyTorch-Encoding's ``SegmentationMetric`` divides by
``union + eps`` and averages over *all* classes (an absent class counts 0); on ADE20K val every class is
present, so the two agree there. Targets outside ``0..num_classes-1`` that are not ``ignore_index``
raise instead of being dropped or clipped.

:func:`predict_logits` is PyTorch-Encoding's ``MultiEvalModule`` (``encoding/models/base.py``) for one
image: for each scale the image is resized (bilinear, ``align_corners=True``) so that its long side is
``ceil(base_size * scale)`` (or, without ``base_size``, both sides are multiplied by ``scale``); with a
``crop_size`` an image that fits is padded to the crop, a larger one is evaluated in overlapping
``crop_size`` windows (stride ``int(crop_size * stride_ratio)``, windows padded, overlaps averaged); the
flip pass is the prediction on the mirrored image, mirrored back; the result is upsampled (bilinear,
``align_corners=True``) to the input size. Combination: by default the *mean* of the (upsampled) logits over
flips and scales (``combine="softmax"``: of the softmax probabilities), which keeps a single-scale result
identical to a plain forward pass. ``combine="encoding"`` is PyTorch-Encoding's own score, to reproduce its
evaluation exactly: ``exp(logits + flipped logits)`` per window (``module_inference``), windows averaged,
summed over scales. Its argmax can differ from the mean of logits where scales disagree.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["ConfusionMatrix", "predict_logits"]


class ConfusionMatrix:
    """``num_classes x num_classes`` int64 counts, rows = target class, columns = predicted class."""

    def __init__(self, num_classes: int, ignore_index: int | None = 255, device: torch.device | str | None = None):
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if ignore_index is not None and 0 <= ignore_index < num_classes:
            raise ValueError(f"ignore_index {ignore_index} collides with a class index (num_classes {num_classes})")
        self.num_classes, self.ignore_index = int(num_classes), ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    def reset(self) -> None:
        self.matrix.zero_()

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch: ``pred`` and ``target`` integer tensors of the same shape (e.g. ``logits.argmax(1)``)."""
        pred, target = torch.as_tensor(pred), torch.as_tensor(target)
        if pred.shape != target.shape:
            raise ValueError(f"prediction shape {tuple(pred.shape)} != target shape {tuple(target.shape)}; "
                             "pass class indices (logits.argmax(1)) at the label's resolution")
        for name, t in (("prediction", pred), ("target", target)):
            if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
                raise ValueError(f"{name} must hold integer class indices, got {t.dtype}")
        pred, target = pred.reshape(-1).long(), target.reshape(-1).long().to(pred.device)
        if self.ignore_index is not None:
            keep = target != self.ignore_index
            pred, target = pred[keep], target[keep]
        c = self.num_classes
        for name, t in (("target", target), ("prediction", pred)):
            bad = (t < 0) | (t >= c)
            if bool(bad.any()):
                values = torch.unique(t[bad]).tolist()
                shown = ", ".join(str(v) for v in values[:12]) + (" ..." if len(values) > 12 else "")
                ignore = f" and is not ignore_index {self.ignore_index}" if name == "target" else ""
                raise ValueError(f"{name} value(s) {shown} outside 0..{c - 1}{ignore}; check the label mapping "
                                 "(e.g. ADE20K's 0 -> ignore, v -> v - 1) and num_classes")
        counts = torch.bincount(target * c + pred, minlength=c * c).reshape(c, c)
        self.matrix += counts.to(self.matrix.device)

    def all_reduce(self) -> ConfusionMatrix:
        """Sum the matrices of all processes (``torch.distributed``); a no-op when not initialised."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            tensor = self.matrix
            if dist.get_backend() == "nccl" and not tensor.is_cuda:
                tensor = tensor.cuda()
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
            self.matrix = tensor.to(self.matrix.device)
        return self

    # -- metrics (float64 numpy internally) -------------------------------------------------------------

    def _np(self) -> np.ndarray:
        return self.matrix.detach().cpu().numpy().astype(np.float64)

    @property
    def num_pixels(self) -> int:
        return int(self.matrix.sum().item())

    def pixel_accuracy(self) -> float:
        """Correct / labelled pixels (NaN before any labelled pixel)."""
        m = self._np()
        total = m.sum()
        return float(np.trace(m) / total) if total else float("nan")

    def iou(self) -> torch.Tensor:
        """Per-class IoU, float64 ``(num_classes,)``; NaN where the class is in neither prediction nor target."""
        m = self._np()
        tp = np.diag(m)
        union = m.sum(0) + m.sum(1) - tp
        with np.errstate(divide="ignore", invalid="ignore"):
            return torch.from_numpy(np.where(union > 0, tp / np.where(union > 0, union, 1), np.nan))

    def mean_iou(self) -> float:
        values = self.iou().numpy()
        return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")

    def class_accuracy(self) -> torch.Tensor:
        """Per-class recall TP / target pixels (NaN for classes absent from the target)."""
        m = self._np()
        rows = m.sum(1)
        return torch.from_numpy(np.where(rows > 0, np.diag(m) / np.where(rows > 0, rows, 1), np.nan))

    def mean_accuracy(self) -> float:
        values = self.class_accuracy().numpy()
        return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")

    def summary(self, class_names: Sequence[str] | None = None) -> dict:
        """JSON-friendly: pixAcc, mIoU, mean class accuracy, pixel count, per-class IoU / accuracy (``None``
        for a class that is absent, i.e. NaN)."""
        names = list(class_names) if class_names is not None else [str(i) for i in range(self.num_classes)]
        if len(names) != self.num_classes:
            raise ValueError(f"{len(names)} class names for {self.num_classes} classes")

        def clean(x: float):
            return None if math.isnan(x) else float(x)

        return {"pixel_accuracy": clean(self.pixel_accuracy()), "mean_iou": clean(self.mean_iou()),
                "mean_accuracy": clean(self.mean_accuracy()), "num_pixels": self.num_pixels,
                "iou": {n: clean(v) for n, v in zip(names, self.iou().tolist())},
                "accuracy": {n: clean(v) for n, v in zip(names, self.class_accuracy().tolist())}}

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(num_classes={self.num_classes}, pixels={self.num_pixels}, "
                f"pixAcc={self.pixel_accuracy():.4f}, mIoU={self.mean_iou():.4f})")


# ----------------------------------------------------------------------------------------------------
# multi-scale / flip / sliding-window inference


def _logits(output, num_classes: int) -> torch.Tensor:
    if isinstance(output, dict):
        if "out" not in output:
            raise ValueError(f"model returned a dict without 'out' (keys: {sorted(output)})")
        output = output["out"]
    elif isinstance(output, (tuple, list)):
        output = output[0]  # PyTorch-Encoding models return (out, aux, ...)
    if not isinstance(output, torch.Tensor) or output.dim() != 4:
        raise ValueError(f"model must return (N, C, h, w) logits or {{'out': logits}}, got {type(output).__name__}"
                         + (f" of shape {tuple(output.shape)}" if isinstance(output, torch.Tensor) else ""))
    if output.shape[1] != num_classes:
        raise ValueError(f"model returned {output.shape[1]} channels, expected num_classes={num_classes}")
    return output


def _resize(x: torch.Tensor, size: tuple[int, int], align_corners: bool) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=align_corners)


def _pad(x: torch.Tensor, height: int, width: int, value: torch.Tensor) -> torch.Tensor:
    h, w = x.shape[-2:]
    if h >= height and w >= width:
        return x
    out = value.to(x).view(1, -1, 1, 1).expand(x.shape[0], x.shape[1], max(h, height), max(w, width)).clone()
    out[..., :h, :w] = x
    return out


def _scaled_size(h: int, w: int, scale: float, base_size: int | None, resize_side: str,
                 fit: tuple[int, int] | None = None) -> tuple[int, int]:
    if fit is not None:  # mmcv's keep-ratio rescale: the largest size with long <= fit[0] and short <= fit[1]
        factor = min(max(fit) / max(h, w), min(fit) / min(h, w)) * scale
        return max(1, int(h * factor + 0.5)), max(1, int(w * factor + 0.5))
    if base_size is None:
        return max(1, int(h * scale + 0.5)), max(1, int(w * scale + 0.5))
    target = int(math.ceil(base_size * scale))
    if resize_side == "long":  # PyTorch-Encoding HEAD
        if h > w:
            return target, max(1, int(1.0 * w * target / h + 0.5))
        return max(1, int(1.0 * h * target / w + 0.5)), target
    if resize_side == "short":  # PyTorch-Encoding's commented-out / GluonCV variant
        if h > w:
            return max(1, int(1.0 * h * target / w)), target
        return target, max(1, int(1.0 * w * target / h))
    raise ValueError(f"resize_side must be 'long' or 'short', got {resize_side!r}")


@torch.no_grad()
def predict_logits(model: Callable, image: torch.Tensor, num_classes: int, scales: Sequence[float] = (1.0,),
                   flip: bool = False, crop_size: int | tuple[int, int] | None = None, stride_ratio: float = 2 / 3,
                   base_size: int | None = None, resize_side: str = "long", combine: str = "logits",
                   pad_value: float | Sequence[float] = 0.0, align_corners: bool = True,
                   fit: tuple[int, int] | None = None) -> torch.Tensor:
    """Multi-scale (+ flip, + sliding-window) prediction for one image -> float ``(num_classes, H, W)``.

    ``model`` maps ``(N, 3, h, w)`` to logits ``(N, C, h', w')`` (a tensor, a ``{"out": ...}`` dict as in
    torchvision, or a tuple whose first item is the logits); lower-resolution outputs are upsampled
    to the input window. ``image`` is ``(3, H, W)`` or ``(1, 3, H, W)``, in whatever space the model
    expects; ``pad_value`` (a scalar or one value per channel) fills window padding — 0 is black for
    ``[0, 1]`` images; use ``-mean / std`` for normalised ones (PyTorch-Encoding's choice).
    Scaling: ``base_size`` given -> the ``resize_side`` ("long" as in PyTorch-Encoding's
    MultiEvalModule, or "short") becomes ``ceil(base_size * scale)``; ``fit=(long, short)`` first rescales the
    image to the largest size within those limits, keeping its aspect ratio (mmseg's test ``Resize``); else both
    sides times ``scale``. ``align_corners`` applies to every resize (False for mmseg's models).
    ``combine``: "logits" (mean of logits), "softmax" (mean of probabilities) or "encoding" (PyTorch-Encoding's
    score: the sum over scales of ``exp(logits + flipped logits)``; see the module docstring). The model's
    train/eval mode is left as it is (call ``model.eval()`` first).
    """
    if image.dim() == 3:
        image = image.unsqueeze(0)
    if image.dim() != 4 or image.shape[0] != 1:
        raise ValueError(f"image must be (3, H, W) or (1, 3, H, W), got {tuple(image.shape)}")
    if combine not in ("logits", "softmax", "encoding"):
        raise ValueError(f"combine must be 'logits', 'softmax' or 'encoding', got {combine!r}")
    if not scales:
        raise ValueError("scales is empty")
    image = image.float() if not image.is_floating_point() else image
    _, channels, height, width = image.shape
    pad = torch.as_tensor(pad_value, dtype=image.dtype, device=image.device).reshape(-1)
    if pad.numel() == 1:
        pad = pad.expand(channels)
    if pad.numel() != channels:
        raise ValueError(f"pad_value has {pad.numel()} values for a {channels}-channel image")
    if crop_size is not None:
        if not 0 < stride_ratio <= 1:
            raise ValueError(f"stride_ratio must be in (0, 1], got {stride_ratio}")
        crop_h, crop_w = (crop_size, crop_size) if isinstance(crop_size, int) else (int(v) for v in crop_size)
        stride_h, stride_w = max(1, int(crop_h * stride_ratio)), max(1, int(crop_w * stride_ratio))

    def infer(x: torch.Tensor) -> torch.Tensor:
        out = _resize(_logits(model(x), num_classes).float(), tuple(x.shape[-2:]), align_corners)
        if combine == "softmax":
            out = out.softmax(1)
        if flip:
            back = _resize(_logits(model(x.flip(-1)), num_classes).float(), tuple(x.shape[-2:]), align_corners)
            if combine == "softmax":
                back = back.softmax(1)
            out = out + back.flip(-1) if combine == "encoding" else (out + back.flip(-1)) / 2
        return out.exp() if combine == "encoding" else out

    def windows(x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if crop_size is None:
            return infer(x)
        if h <= crop_h and w <= crop_w:
            return infer(_pad(x, crop_h, crop_w, pad))[..., :h, :w]
        padded = _pad(x, crop_h, crop_w, pad)
        ph, pw = padded.shape[-2:]
        scores = x.new_zeros(1, num_classes, ph, pw)
        count = x.new_zeros(1, 1, ph, pw)
        for i in range(int(math.ceil((ph - crop_h) / stride_h)) + 1):
            for j in range(int(math.ceil((pw - crop_w) / stride_w)) + 1):
                h0, w0 = i * stride_h, j * stride_w
                h1, w1 = min(h0 + crop_h, ph), min(w0 + crop_w, pw)
                out = infer(_pad(padded[..., h0:h1, w0:w1], crop_h, crop_w, pad))
                scores[..., h0:h1, w0:w1] += out[..., :h1 - h0, :w1 - w0]
                count[..., h0:h1, w0:w1] += 1
        return (scores / count)[..., :h, :w]

    total = None
    for scale in scales:
        size = _scaled_size(height, width, float(scale), base_size, resize_side, fit)
        scaled = _resize(image, size, align_corners)
        score = _resize(windows(scaled), (height, width), align_corners)
        total = score if total is None else total + score
    return (total if combine == "encoding" else total / len(scales))[0]

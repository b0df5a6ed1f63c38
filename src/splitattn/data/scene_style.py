"""Fashion-MNIST images drawn the way the scenes draw their objects: a tinted garment, alpha-blended on
a smooth colour gradient with mild noise (``data/scenes.py``: ``_background``, ``_tint`` and the blend
in ``render_scene``), batched in torch.

Why: the scenes are the detection / segmentation transfer benchmarks, and the paper's protocol
pretrains the backbone on the classification images of the *same* look (ImageNet photos → COCO /
ADE20K photos). A classifier trained on plain white-on-black Fashion-MNIST recognises tinted scene
garments at chance (10 % of 600 validation-scene crops, 64 % even after subtracting the background), so
its features barely transfer. Trained on this rendering of the *training* images, it sees the scenes'
appearance without ever seeing a scene (the validation scenes hold only test-split garments).

Parameters follow the scene generator exactly: gradient end colours ``base ~ U(25, 140)`` and
``base + U(-45, 45)`` (clipped) per channel, direction ``U(0, 2π)``, noise ``N(0, 4)``; tint =
HSV(``U(0, 1)``, ``U(0.45, 1)``, ``U(0.75, 1)``); alpha = pixel / 255 where the pixel exceeds the mask
threshold (40), else 0; the result is rounded to 8 bits.
"""

from __future__ import annotations

import math

import torch

from .scenes import MASK_THRESHOLD

__all__ = ["SceneStyle", "hsv_to_rgb", "render_scene_style", "sample_scene_style"]


class SceneStyle(dict):
    """Per-image draw: ``base``, ``other``, ``tint`` (N, 3) in 0..255, ``angle`` (N,), ``noise`` (N, 3, H, W)."""


def hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    """(…, 3) HSV in [0, 1] → RGB in [0, 1], as :func:`colorsys.hsv_to_rgb`."""
    h, s, v = hsv.unbind(-1)
    sector = torch.floor(h * 6.0)
    f = h * 6.0 - sector
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    sector = sector.long() % 6
    choices = torch.stack([torch.stack(c, -1) for c in ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v),
                                                         (v, p, q))], 0)
    return choices.gather(0, sector[None, ..., None].expand(1, *sector.shape, 3))[0]


def sample_scene_style(count: int, height: int, width: int, generator: torch.Generator | None = None) -> SceneStyle:
    """Draw the look of ``count`` images (the scene generator's distributions)."""
    def uniform(lo: float, hi: float, *shape: int) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(shape, generator=generator)

    base = uniform(25, 140, count, 3)
    other = (base + uniform(-45, 45, count, 3)).clamp(0, 255)
    angle = uniform(0, 2 * math.pi, count)
    hsv = torch.stack([uniform(0, 1, count), uniform(0.45, 1, count), uniform(0.75, 1, count)], -1)
    noise = 4.0 * torch.randn((count, 3, height, width), generator=generator)
    return SceneStyle(base=base, other=other, angle=angle, tint=hsv_to_rgb(hsv) * 255, noise=noise)


def render_scene_style(gray: torch.Tensor, style: SceneStyle) -> torch.Tensor:
    """Float (N, 3, H, W) in [0, 1] from grayscale (N, 1, H, W) in [0, 1] and a :func:`sample_scene_style` draw."""
    n, _, height, width = gray.shape
    yy, xx = torch.meshgrid(torch.arange(height, dtype=torch.float32) / max(height - 1, 1),
                            torch.arange(width, dtype=torch.float32) / max(width - 1, 1), indexing="ij")
    t = style["angle"].cos().view(n, 1, 1) * xx + style["angle"].sin().view(n, 1, 1) * yy
    low, high = t.amin((1, 2), keepdim=True), t.amax((1, 2), keepdim=True)
    t = ((t - low) / (high - low).clamp_min(1e-6)).unsqueeze(1)
    canvas = style["base"].view(n, 3, 1, 1) * (1 - t) + style["other"].view(n, 3, 1, 1) * t + style["noise"]
    pixels = gray * 255
    alpha = torch.where(pixels > MASK_THRESHOLD, gray, torch.zeros_like(gray))
    canvas = canvas * (1 - alpha) + style["tint"].view(n, 3, 1, 1) * alpha
    return canvas.round().clamp(0, 255) / 255

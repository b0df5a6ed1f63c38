"""Colour-guided refinement of a segmenter's class probabilities, after the prediction (multi-scale + flip
included): each step replaces every pixel's probabilities by their average over a window, weighted by
``exp(-|Δxy|² / 2σ_xy² - |ΔRGB|² / 2σ_rgb²)``. That is the appearance kernel of the dense CRF that DeepLab
v1/v2 ran after their networks (Krähenbühl & Koltun 2011), restricted to a local window as ConvCRF
(Teichmann & Cipolla 2018). Pixels of one colour region end up agreeing on their class; the network's
outline stays where the colour changes. Not part of the ResNeSt paper's protocol: an option, off by default.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["BilateralRefine", "bilateral_refine"]


@dataclass(frozen=True)
class BilateralRefine:
    """``steps`` 0 = off. ``sigma_rgb`` is in the image's [0, 1] units (0.03 ≈ 8 / 255)."""

    steps: int = 0
    window: int = 11
    sigma_xy: float = 5.0
    sigma_rgb: float = 0.03

    def __post_init__(self) -> None:
        if self.steps < 0:
            raise ValueError(f"refine steps must be >= 0 (0: off), got {self.steps}")
        if self.window < 1 or self.window % 2 == 0:
            raise ValueError(f"refine window must be an odd number of pixels >= 1, got {self.window}")
        if self.sigma_xy <= 0 or self.sigma_rgb <= 0:
            raise ValueError(f"refine sigmas must be > 0, got sigma_xy={self.sigma_xy}, sigma_rgb={self.sigma_rgb}")

    def __call__(self, probs: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        return bilateral_refine(probs, image, self.steps, self.window, self.sigma_xy, self.sigma_rgb)


def _offset_weights(image: torch.Tensor, window: int, sigma_xy: float, sigma_rgb: float) -> list[tuple]:
    """Per window offset: (rows, cols) slices into the padded map and its (H, W) weight map, normalised so
    each pixel's weights sum to 1; neighbours outside the image weigh 0, the centre pixel 1 before that."""
    radius = window // 2
    _, height, width = image.shape
    padded = F.pad(image, (radius, radius, radius, radius))
    inside = F.pad(torch.ones(height, width, dtype=image.dtype, device=image.device), (radius,) * 4)
    weights = []
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            rows, cols = slice(radius + dy, radius + dy + height), slice(radius + dx, radius + dx + width)
            colour = (padded[:, rows, cols] - image).square().sum(0)
            spatial = (dy * dy + dx * dx) / (2 * sigma_xy**2)
            weights.append((rows, cols, torch.exp(-spatial - colour / (2 * sigma_rgb**2)) * inside[rows, cols]))
    total = sum(weight for _, _, weight in weights)
    return [(rows, cols, weight / total) for rows, cols, weight in weights]


@torch.no_grad()
def bilateral_refine(probs: torch.Tensor, image: torch.Tensor, steps: int = 1, window: int = 11,
                     sigma_xy: float = 5.0, sigma_rgb: float = 0.03) -> torch.Tensor:
    """Refined ``(C, H, W)`` class probabilities; ``image`` is the ``(3, H, W)`` RGB input in [0, 1].

    The probabilities are walked offset by offset, never unfolded (that would be window² copies of
    ``(C, H, W)``); the weights take window² single-channel ``(H, W)`` maps. ``steps=0`` returns ``probs`` unchanged.
    """
    if probs.dim() != 3 or image.dim() != 3 or probs.shape[1:] != image.shape[1:]:
        raise ValueError(f"need probs (C, H, W) and image (3, H, W) of one size, got {tuple(probs.shape)} "
                         f"and {tuple(image.shape)}")
    if steps == 0:
        return probs
    image = image.to(probs.device, torch.float32)
    radius = window // 2
    weights = _offset_weights(image, window, sigma_xy, sigma_rgb)
    refined = probs.float()
    for _ in range(steps):
        padded = F.pad(refined, (radius, radius, radius, radius))
        summed = torch.zeros_like(refined)
        for rows, cols, weight in weights:
            summed.addcmul_(padded[:, rows, cols], weight)
        refined = summed
    return refined

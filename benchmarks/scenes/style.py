"""Fashion-MNIST images drawn the way the scenes draw their objects: a tinted garment, alpha-blended on
a smooth colour gradient with mild noise (``generator.py``: ``_background``, ``_tint`` and the blend
in ``render_scene``), batched in torch.

Why: the scenes are the detection / segmentation transfer benchmarks, and the paper's protocol
pretrains the backbone on the classification images of the *same* look (ImageNet photos → COCO /
ADE20K photos). A classifier trained on plain white-on-black Fashion-MNIST recognises tinted scene
garments at chance (11 % of the 1,229 validation-scene garments, ``benchmarks/segmentation_scenes_analysis.py``),
so its features barely transfer. Trained on this rendering of the *training* images, it sees the scenes'
appearance without ever seeing a scene (the validation scenes hold only test-split garments).

Parameters follow the scene generator exactly: gradient end colours ``base ~ U(25, 140)`` and
``base + U(-45, 45)`` (clipped) per channel, direction ``U(0, 2π)``, noise ``N(0, 4)``; tint =
HSV(``U(0, 1)``, ``U(0.45, 1)``, ``U(0.75, 1)``); alpha = pixel / 255 where the pixel exceeds the mask
threshold (40), else 0; the result is rounded to 8 bits.
"""

from __future__ import annotations

import math

import torch

from .generator import MASK_THRESHOLD

__all__ = ["SceneStyle", "draw_occluders", "hsv_to_rgb", "render_scene_style", "sample_scene_style", "sample_tints"]


Layers = tuple[torch.Tensor, torch.Tensor]  # extra garments: gray (N, K, H, W), tints (N, K, 3)


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
    tint = sample_tints(count, generator)
    noise = 4.0 * torch.randn((count, 3, height, width), generator=generator)
    return SceneStyle(base=base, other=other, angle=angle, tint=tint, noise=noise)


def sample_tints(count: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """(count, 3) garment colours in 0..255: HSV(U(0, 1), U(0.45, 1), U(0.75, 1)) as the generator's ``_tint``."""
    hsv = [lo + (1 - lo) * torch.rand(count, generator=generator) for lo in (0.0, 0.45, 0.75)]
    return hsv_to_rgb(torch.stack(hsv, -1)) * 255


def render_scene_style(gray: torch.Tensor, style: SceneStyle, behind: Layers | None = None,
                       front: Layers | None = None) -> torch.Tensor:
    """Float (N, 3, H, W) in [0, 1] from grayscale (N, 1, H, W) in [0, 1] and a :func:`sample_scene_style` draw.

    ``behind`` / ``front``: optional other garments ``(gray (N, K, H, W), tints (N, K, 3))`` blended before /
    after ``gray`` in order (later ones cover earlier ones, as the generator pastes); a blank layer is a no-op.
    """
    n, _, height, width = gray.shape
    yy, xx = torch.meshgrid(torch.arange(height, dtype=torch.float32) / max(height - 1, 1),
                            torch.arange(width, dtype=torch.float32) / max(width - 1, 1), indexing="ij")
    t = style["angle"].cos().view(n, 1, 1) * xx + style["angle"].sin().view(n, 1, 1) * yy
    low, high = t.amin((1, 2), keepdim=True), t.amax((1, 2), keepdim=True)
    t = ((t - low) / (high - low).clamp_min(1e-6)).unsqueeze(1)
    canvas = style["base"].view(n, 3, 1, 1) * (1 - t) + style["other"].view(n, 3, 1, 1) * t + style["noise"]
    layers = [] if behind is None else list(zip(behind[0].unbind(1), behind[1].unbind(1)))
    layers.append((gray[:, 0], style["tint"]))
    layers += [] if front is None else list(zip(front[0].unbind(1), front[1].unbind(1)))
    for layer, tint in layers:
        alpha = torch.where(layer * 255 > MASK_THRESHOLD, layer, torch.zeros_like(layer)).unsqueeze(1)
        canvas = canvas * (1 - alpha) + tint.view(n, 3, 1, 1) * alpha
    return canvas.round().clamp(0, 255) / 255


def draw_occluders(gray: torch.Tensor, pool: torch.Tensor, count: int, generator: torch.Generator | None = None,
                   min_visible: float = 0.3, size_ratio: tuple[float, float] = (24 / 56, 56 / 24),
                   positions: torch.Tensor | None = None,
                   draws: int | None = None) -> tuple[Layers, Layers]:
    """Other garments around each of ``gray`` (N, 1, H, W), as a scene crop at a garment's square shows them.

    Each image gets 0..``count`` garments from ``pool`` (uint8 (M, 1, H, W), e.g. the training images), each
    flipped at random, resized by a log-uniform factor in ``size_ratio`` of the canvas (about the range of the
    generator's 24-56 px objects relative to each other) about a random centre on it, and put behind or in
    front of the image's garment with equal odds. A front garment is dropped if the image's garment would keep
    less than ``min_visible`` of its mask (the generator's placement rule, applied to that garment only).
    Returns ``(behind, front)`` for :func:`render_scene_style`, each ``(gray (N, count, H, W), tints
    (N, count, 3))`` with blank layers where no garment is.

    ``draws`` / ``positions``: draw for a batch of ``draws`` images and keep those at ``positions`` (a process's
    share of a global batch, so that N processes see what one would).
    """
    n, _, height, width = gray.shape
    positions = torch.arange(n) if positions is None else positions
    draws = n if draws is None else draws

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand((draws, *shape), generator=generator)[positions]

    mask = gray[:, 0] * 255 > MASK_THRESHOLD
    own = mask.sum((1, 2)).float()
    visible = mask.clone()
    wanted = (rand() * (count + 1)).long().clamp_max(count)
    layers = torch.zeros(n, count, height, width)
    is_front = torch.zeros(n, count, dtype=torch.bool)
    lo, hi = math.log(size_ratio[0]), math.log(size_ratio[1])
    for k in range(count):
        index = (rand() * len(pool)).long().clamp_max(len(pool) - 1)
        flip = rand() < 0.5
        scale = (lo + (hi - lo) * rand()).exp()
        centre = rand(2) * 2 - 1
        front = rand() < 0.5
        other = pool[index].float().div(255)
        other = torch.where(flip.view(n, 1, 1, 1), other.flip(-1), other)
        other = random_zoom(other, scale, centre)[:, 0]
        covered = visible & (other * 255 > MASK_THRESHOLD)
        keeps = (visible & ~covered).sum((1, 2)).float() >= min_visible * own
        use = (k < wanted) & (~front | keeps)
        visible = torch.where((use & front).view(n, 1, 1), visible & ~covered, visible)
        layers[:, k] = other * use.view(n, 1, 1)
        is_front[:, k] = front & use
    tints = sample_tints(draws * count, generator).view(draws, count, 3)[positions]
    behind = (layers * (~is_front).view(n, count, 1, 1), tints)
    return behind, (layers * is_front.view(n, count, 1, 1), tints)


def random_zoom(images: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Batched zoom: each image resized by ``scale[i]`` (bilinear) about a centre moved by ``shift[i]``
    (x, y in units of half the canvas), zero outside the source. < 1 shows the object smaller on more
    background, > 1 crops into it: the size variation that ImageNet's random-resized crops give, for
    in-memory small images."""
    batch = images.shape[0]
    theta = torch.zeros(batch, 2, 3, dtype=images.dtype)
    theta[:, 0, 0] = theta[:, 1, 1] = 1 / scale
    theta[:, :, 2] = -shift / scale[:, None]
    grid = torch.nn.functional.affine_grid(theta, list(images.shape), align_corners=False)
    return torch.nn.functional.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def resize_uint8(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (N, C, H, W) → (N, C, size, size), bilinear: PIL's ``BILINEAR`` up to rounding when enlarging, the
    resampling the scene generator draws its garments with (so its mask threshold finds the same shapes)."""
    resized = torch.nn.functional.interpolate(images.float(), size=(size, size), mode="bilinear", align_corners=False)
    return resized.round_().clamp_(0, 255).to(torch.uint8)


def random_erasing_boxes(count: int, height: int, width: int, probability: float,
                         generator: torch.Generator | None = None, area: tuple[float, float] = (0.02, 0.4),
                         min_aspect: float = 0.3) -> torch.Tensor:
    """Random Erasing's boxes (Zhong et al. 2020) as a bool mask (count, height, width): with ``probability``,
    one box per image of ``area`` × the canvas and aspect ratio in [``min_aspect``, 1 / ``min_aspect``]
    (log-uniform), clipped to the canvas (the paper redraws boxes that do not fit). The images' pixels in
    the box are replaced by N(0, 1) noise after normalisation (timm's per-pixel mode): a stand-in for
    occlusion that cuts into the object. Batched from an explicit generator, unlike torchvision's per-image
    ``RandomErasing`` on the global RNG: the in-memory batches draw for the whole global batch, so resumes
    and DDP shards see the same boxes."""
    erase = torch.rand(count, generator=generator) < probability
    box_area = (area[0] + (area[1] - area[0]) * torch.rand(count, generator=generator)) * height * width
    aspect = (math.log(min_aspect) * (1 - 2 * torch.rand(count, generator=generator))).exp()
    box_h = (box_area * aspect).sqrt().round().clamp(1, height)
    box_w = (box_area / aspect).sqrt().round().clamp(1, width)
    top = (torch.rand(count, generator=generator) * (height - box_h + 1)).floor()
    left = (torch.rand(count, generator=generator) * (width - box_w + 1)).floor()
    rows, cols = torch.arange(height).view(1, -1, 1), torch.arange(width).view(1, 1, -1)
    return ((rows >= top.view(-1, 1, 1)) & (rows < (top + box_h).view(-1, 1, 1))
            & (cols >= left.view(-1, 1, 1)) & (cols < (left + box_w).view(-1, 1, 1)) & erase.view(-1, 1, 1))

"""Classification pretraining in the scenes' look, for the scenes transfer benchmarks.

The library's in-memory Fashion-MNIST batches (random crop after padding, flip) plus what the scenes
experiments tried: each 28 px garment drawn as the scene generator draws its garments (tinted on a colour
gradient, RGB; :mod:`.style`), optionally resized first (``resize``), zoomed about a random centre
(``zoom``), with other garments around it (``occluders``) and Random Erasing in batched form (``erasing``).
A benchmark config holds these under a ``scenes:`` section beside the library's sections::

    scenes: {style: true, resize: 0, zoom: [1, 1], occluders: 0, erasing: 0}

:func:`scene_style_data` builds the batches for :class:`splitattn.classification.ClassificationTask`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from splitattn.classification.config import ClassificationConfig
from splitattn.classification.data import DataBundle, TensorEvalBatches, TensorTrainBatches, fashion_mnist_tensors
from splitattn.classification.fashion_mnist import CLASSES
from splitattn.models.zoo import IMAGENET_MEAN, IMAGENET_STD
from splitattn.seeding import generator

from .style import (
    draw_occluders,
    random_erasing_boxes,
    random_zoom,
    render_scene_style,
    resize_uint8,
    sample_scene_style,
)


@dataclass
class SceneStyleOptions:
    style: bool = True  # draw in the scenes' look (RGB); false keeps grey 1-channel images
    resize: int = 0  # train and test at this square size (bilinear from 28 px); 0 keeps 28
    zoom: list[float] = field(default_factory=lambda: [1.0, 1.0])  # random resize range; [1, 1] off
    occluders: int = 0  # style: up to this many other garments around each one (a scene crop's view)
    erasing: float = 0.0  # batched Random Erasing probability; 0 off

    def check(self) -> None:
        if not (len(self.zoom) == 2 and 0 < self.zoom[0] <= self.zoom[1]):
            raise ValueError("scenes.zoom must be [lo, hi] with 0 < lo <= hi")
        if not 0 <= self.occluders <= 8 or (self.occluders and not self.style):
            raise ValueError("scenes.occluders must be 0..8 and needs scenes.style")
        if not 0 <= self.erasing <= 1 or not (self.resize == 0 or self.resize >= 8):
            raise ValueError("scenes.erasing must be in [0, 1], scenes.resize 0 or >= 8")


class SceneStyleTrainBatches(TensorTrainBatches):
    """The library's in-memory batches, drawn as the scenes experiments tried.

    ``zoom`` (lo, hi): after the crop and flip, each image is resized by a factor drawn from [lo, hi]
    about a random centre (:func:`random_zoom`; (1, 1) = off). ``scene_style``: grayscale images are
    then rendered in the scenes' look (tinted on a colour gradient, RGB), a fresh draw per image and step;
    with ``occluders`` > 0, up to that many other training garments are drawn around each one, behind or in
    front of it, as a crop of a scene at one garment shows them (:func:`draw_occluders`). ``erasing``: the
    probability of Random Erasing in the batched form these records used (:func:`random_erasing_boxes`: N(0, 1)
    noise boxes drawn for the whole global batch), not torchvision's per-image one of the library.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch: int, rank: int, world: int,
                 seed: int, pad: int, mean: tuple[float, ...], std: tuple[float, ...], scene_style: bool = False,
                 zoom: tuple[float, float] = (1.0, 1.0), occluders: int = 0, erasing: float = 0.0):
        super().__init__(images, labels, batch, rank, world, seed, pad, mean, std, erasing)
        self.scene_style, self.zoom, self.occluders = scene_style, tuple(zoom), occluders

    def draw(self, x: torch.Tensor, gen: torch.Generator, positions: torch.Tensor) -> torch.Tensor:
        size = self.batch * self.world
        if self.zoom != (1.0, 1.0):
            lo, hi = self.zoom
            scale = (lo + (hi - lo) * torch.rand(size, generator=gen))[positions]
            shift = (torch.rand(size, 2, generator=gen) * 2 - 1)[positions] * (scale - 1).abs()[:, None]
            x = random_zoom(x, scale, shift)
        if self.scene_style:
            style = sample_scene_style(size, *x.shape[-2:], generator=gen)
            behind = front = None
            if self.occluders:
                behind, front = draw_occluders(x, self.images, self.occluders, gen, positions=positions, draws=size)
            x = render_scene_style(x, {key: value[positions] for key, value in style.items()}, behind, front)
        return x

    def erase(self, x: torch.Tensor, gen: torch.Generator, positions: torch.Tensor, epoch: int,
              step: int) -> torch.Tensor:
        if not self.erasing:
            return x
        size = self.batch * self.world
        boxes = random_erasing_boxes(size, *x.shape[-2:], self.erasing, generator=gen)[positions]
        noise = torch.randn((size, *x.shape[1:]), generator=gen)[positions]
        return torch.where(boxes[:, None], noise, x)


def scene_style_data(cfg: ClassificationConfig, options: SceneStyleOptions, batch: int, rank: int = 0,
                     world: int = 1) -> DataBundle:
    """Fashion-MNIST batches drawn as ``options`` says (``cfg.data`` gives the splits and subsets)."""
    options.check()
    d, seed = cfg.data, cfg.engine.seed
    train_x, train_y, val_x, val_y = fashion_mnist_tensors(cfg)
    if options.resize and options.resize != train_x.shape[-1]:
        train_x, val_x = resize_uint8(train_x, options.resize), resize_uint8(val_x, options.resize)
    if options.style:  # RGB in the scenes' look; the test images get one fixed draw
        mean, std, in_chans = IMAGENET_MEAN, IMAGENET_STD, 3
        style = sample_scene_style(len(val_x), *val_x.shape[-2:], generator=generator(seed, 1_000_003))
        val_x = (render_scene_style(val_x.float().div(255), style) * 255).round().to(torch.uint8)
    else:
        pixels = train_x.float().div(255)
        mean, std, in_chans = (round(pixels.mean().item(), 4),), (round(pixels.std().item(), 4),), 1
    return DataBundle(
        train=SceneStyleTrainBatches(train_x, train_y, batch, rank, world, seed, d.pad_crop, mean, std,
                                     options.style, tuple(options.zoom), options.occluders, options.erasing),
        val=TensorEvalBatches(val_x, val_y, cfg.engine.eval_batch_size or max(batch, 256), rank, world, mean, std),
        classes=list(CLASSES), in_chans=in_chans, mean=mean, std=std, image_size=train_x.shape[-1])

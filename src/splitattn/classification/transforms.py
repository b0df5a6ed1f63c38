"""Training augmentation as the released weights were trained (paper-facts.md §7.2, Gluon train.py).

ImageNet pipeline: AutoAugment (ImageNet policy, applied to the full image before cropping, as
Gluon did) or RandAugment(2, 12) (the PyTorch-Encoding recipe) → RandomResizedCrop (scale 0.08-1;
from 320 px the official "large crop": a TF-style distorted box, area 0.1-1, resized bicubic) →
horizontal flip → ColorJitter(0.4, 0.4, 0.4) → PCA lighting noise 0.1 → normalise.
Small images (Fashion-MNIST and other 28-32 px sets): random crop after padding, flip, normalise.
Random Erasing (Zhong et al. 2020, torchvision's ``RandomErasing``) is an option of both, off in the recipe.
"""

from __future__ import annotations

import math
import random

import torch
from PIL import Image
from torchvision import transforms
from torchvision.transforms import InterpolationMode

from ..data.transforms import CenterCropFraction, ToMode
from ..models.zoo import IMAGENET_MEAN, IMAGENET_STD

# AlexNet PCA of ImageNet RGB pixels (Krizhevsky et al. 2012), as every ResNeSt recipe uses.
IMAGENET_EIGVAL = (0.2175, 0.0188, 0.0045)
IMAGENET_EIGVEC = ((-0.5675, 0.7192, 0.4009), (-0.5808, -0.0045, -0.8140), (-0.5836, -0.6948, 0.4203))
LARGE_CROP = 320


class Lighting:
    """PCA lighting noise on a (3, H, W) tensor in [0, 1]: add ``eigvec · (α ⊙ eigval)``, α ~ N(0, std²)."""

    def __init__(self, std: float = 0.1):
        self.std = std
        self.eigval = torch.tensor(IMAGENET_EIGVAL)
        self.eigvec = torch.tensor(IMAGENET_EIGVEC)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        if self.std <= 0:
            return img
        alpha = torch.randn(3) * self.std
        rgb = self.eigvec @ (alpha * self.eigval)
        return img + rgb.view(3, 1, 1)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(std={self.std})"


class DistortedBoxCrop:
    """The official large-crop sampler: a random box of area 0.1-1 and aspect 3/4-4/3 covering ≥ 10 %
    of the image (TensorFlow's ``sample_distorted_bounding_box``, ≤ 10 tries, else the centre crop),
    resized to ``size`` with bicubic interpolation."""

    def __init__(self, size: int, area=(0.1, 1.0), ratio=(3 / 4, 4 / 3), min_covered: float = 0.1, attempts: int = 10):
        self.size, self.area, self.ratio, self.min_covered, self.attempts = size, area, ratio, min_covered, attempts
        self.resize = transforms.Resize((size, size), interpolation=InterpolationMode.BICUBIC)
        self.fallback = CenterCropFraction(size, "bicubic")

    def sample_box(self, width: int, height: int) -> tuple[int, int, int, int] | None:
        """``(x, y, w, h)`` of a valid box, or None when every attempt failed (then: centre crop)."""
        total = width * height
        for _ in range(self.attempts):
            aspect = random.uniform(*self.ratio)
            low = int(round(math.sqrt(self.area[0] * total / aspect)))
            high = min(int(round(math.sqrt(self.area[1] * total / aspect))), int(width / aspect), height)
            h = int(round(random.uniform(min(low, high), high)))
            w = int(round(h * aspect))
            area = w * h
            if not (self.area[0] * total <= area <= self.area[1] * total) or w > width or h > height:
                continue
            if area < self.min_covered * total or (w == width and h == height):
                continue
            return random.randint(0, width - w), random.randint(0, height - h), w, h
        return None

    def __call__(self, img: Image.Image) -> Image.Image:
        box = self.sample_box(*img.size)
        if box is None:
            return self.fallback(img)
        x, y, w, h = box
        return self.resize(img.crop((x, y, x + w, y + h)))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size}, area={self.area}, interpolation=bicubic)"


def imagenet_train_transform(crop: int, auto_augment: str = "imagenet", randaugment_ops: int = 2,
                             randaugment_magnitude: int = 12, color_jitter: float = 0.4,
                             lighting: float = 0.1, random_erasing: float = 0.0) -> transforms.Compose:
    """The recipe's training transform for a PIL image; returns a normalised tensor."""
    steps: list = [ToMode("RGB")]
    if auto_augment == "imagenet":
        steps.append(transforms.AutoAugment(transforms.AutoAugmentPolicy.IMAGENET))
    elif auto_augment == "randaugment":
        # magnitude m of 30 like the official RandAugment(2, 12) (torchvision: 31 bins, 0..30)
        steps.append(transforms.RandAugment(randaugment_ops, randaugment_magnitude, num_magnitude_bins=31))
    elif auto_augment != "none":
        raise ValueError(f"auto_augment must be 'imagenet', 'randaugment' or 'none', got {auto_augment!r}")
    if crop >= LARGE_CROP:
        steps.append(DistortedBoxCrop(crop))
    else:
        steps.append(transforms.RandomResizedCrop(crop, scale=(0.08, 1.0)))
    steps.append(transforms.RandomHorizontalFlip())
    if color_jitter > 0:
        steps.append(transforms.ColorJitter(color_jitter, color_jitter, color_jitter))
    steps.append(transforms.ToTensor())
    if lighting > 0:
        steps.append(Lighting(lighting))
    steps.append(transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD))
    if random_erasing > 0:
        steps.append(transforms.RandomErasing(random_erasing, value="random"))
    return transforms.Compose(steps)


def small_image_train_transform(crop: int, pad: int, mean, std, random_erasing: float = 0.0) -> transforms.Compose:
    """Random crop after zero padding, flip, normalise: for 28-32 px images in folders."""
    steps = [ToMode("RGB"), transforms.Resize((crop, crop)), transforms.RandomCrop(crop, padding=pad),
             transforms.RandomHorizontalFlip(), transforms.ToTensor(), transforms.Normalize(mean, std)]
    if random_erasing > 0:
        steps.append(transforms.RandomErasing(random_erasing, value="random"))
    return transforms.Compose(steps)


def small_image_eval_transform(crop: int, mean, std) -> transforms.Compose:
    return transforms.Compose([ToMode("RGB"), transforms.Resize((crop, crop)), transforms.ToTensor(),
                               transforms.Normalize(mean, std)])


def pad_crop_flip(images: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, flip: torch.Tensor,
                  pad: int) -> torch.Tensor:
    """Batched crop of each zero-padded image at offset (dy, dx) in [0, 2·pad], then flip where ``flip``."""
    batch, channels, height, width = images.shape
    if pad > 0:
        padded = torch.nn.functional.pad(images, (pad, pad, pad, pad))
        rows = (dy[:, None] + torch.arange(height))[:, None, :, None]
        cols = (dx[:, None] + torch.arange(width))[:, None, None, :]
        images = padded[torch.arange(batch)[:, None, None, None], torch.arange(channels)[None, :, None, None],
                        rows, cols]
    return torch.where(flip[:, None, None, None], images.flip(-1), images)


def random_erasing(images: torch.Tensor, probability: float, seeds: list[int]) -> torch.Tensor:
    """torchvision's ``RandomErasing(probability, value='random')`` on each image of a batch, each drawing
    from its own seed: in-memory batches stay a function of (seed, epoch, step, sample) however they are
    sharded over processes."""
    eraser = transforms.RandomErasing(probability, value="random")
    erased = []
    for image, seed in zip(images, seeds):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            erased.append(eraser(image))
    return torch.stack(erased)

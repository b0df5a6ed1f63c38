"""Batches for training and evaluation, sharded over processes and resumable mid-epoch.

Two sources share one interface: in-memory tensors (Fashion-MNIST; augmented a batch at a time, no
worker processes) and image folders (a DataLoader with workers). Sample order and augmentation
are pure functions of (seed, epoch, step / index), so ``batches(epoch, start_step=k)`` continues an
interrupted epoch exactly and every process sees its own shard (DistributedSampler semantics).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from ..data.transforms import create_transform
from ..models.zoo import IMAGENET_MEAN, IMAGENET_STD, get_entry
from ..seeding import derive_seed, generator
from .config import ClassificationConfig
from .fashion_mnist import CLASSES as FASHION_MNIST_CLASSES
from .fashion_mnist import load_fashion_mnist
from .folder import DatasetError, ImageFolderDataset, collate_skipping
from .transforms import (
    imagenet_train_transform,
    pad_crop_flip,
    random_erasing,
    small_image_eval_transform,
    small_image_train_transform,
)

Batch = tuple[torch.Tensor, torch.Tensor, list[str]]  # images, labels, paths of unreadable files skipped


def shard(count: int, world: int, rank: int, order: torch.Tensor | None = None) -> torch.Tensor:
    """This process's indices: the order padded (by wrapping) to a multiple of ``world``, every world-th."""
    order = torch.arange(count) if order is None else order
    total = -(-count // world) * world
    if total > count:
        order = torch.cat([order, order[: total - count]])
    return order[rank::world]


def balanced_subset(labels: list[int] | torch.Tensor, size: int, seed: int) -> torch.Tensor:
    """Indices of ``size`` samples with the classes as equal as possible, chosen reproducibly."""
    labels = torch.as_tensor(labels)
    classes = labels.unique()
    order = torch.randperm(len(labels), generator=generator(seed, 7))
    per_class = [order[labels[order] == c] for c in classes]
    take = [size // len(classes) + (1 if i < size % len(classes) else 0) for i in range(len(classes))]
    if any(t > len(p) for t, p in zip(take, per_class)):
        raise DatasetError(f"a subset of {size} needs more images than some class has; use a smaller subset")
    return torch.cat([p[:t] for p, t in zip(per_class, take)]).sort().values


class TensorTrainBatches:
    """Shuffled, sharded, augmented batches from uint8 tensors (N, C, H, W) held in memory: random crop after
    zero padding by ``pad``, horizontal flip, normalisation, and Random Erasing with probability ``erasing``.

    Every draw of a step comes from the generator of (seed, epoch, step) and is made for the whole global
    batch, each process taking its samples' share (``positions``), so N processes see exactly the images one
    process would see with the same global batch. Subclasses can add to the pictures (:meth:`draw`, before
    normalisation) or replace the erasing (:meth:`erase`) under the same rule.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch: int, rank: int, world: int,
                 seed: int, pad: int, mean: tuple[float, ...], std: tuple[float, ...], erasing: float = 0.0):
        self.images, self.labels, self.erasing = images, labels, erasing
        self.batch, self.rank, self.world, self.seed, self.pad = batch, rank, world, seed, pad
        self.mean = torch.tensor(mean).view(1, -1, 1, 1)
        self.std = torch.tensor(std).view(1, -1, 1, 1)
        if len(self) == 0:
            raise DatasetError(f"{len(images)} training images are fewer than one batch of {batch} per process "
                               f"× {world} processes: lower optim.batch_size or use more data")

    def __len__(self) -> int:
        return (-(-len(self.images) // self.world)) // self.batch

    def draw(self, x: torch.Tensor, gen: torch.Generator, positions: torch.Tensor) -> torch.Tensor:
        """More augmentation of the cropped, flipped [0, 1] images (``x``: this process's rows); none here."""
        return x

    def erase(self, x: torch.Tensor, gen: torch.Generator, positions: torch.Tensor, epoch: int,
              step: int) -> torch.Tensor:
        """torchvision's Random Erasing on the normalised images, each image from its own seed."""
        if not self.erasing:
            return x
        return random_erasing(x, self.erasing, [derive_seed(self.seed, epoch, step, int(p)) for p in positions])

    def batches(self, epoch: int, start_step: int = 0) -> Iterator[Batch]:
        order = torch.randperm(len(self.images), generator=generator(self.seed, epoch))
        mine = shard(len(self.images), self.world, self.rank, order)
        positions = torch.arange(self.batch) * self.world + self.rank
        size = self.batch * self.world
        for step in range(start_step, len(self)):
            index = mine[step * self.batch:(step + 1) * self.batch]
            gen = generator(self.seed, epoch, step)
            dy = torch.randint(0, 2 * self.pad + 1, (size,), generator=gen)[positions]
            dx = torch.randint(0, 2 * self.pad + 1, (size,), generator=gen)[positions]
            flip = (torch.rand(size, generator=gen) < 0.5)[positions]
            x = self.draw(pad_crop_flip(self.images[index].float().div_(255), dy, dx, flip, self.pad), gen, positions)
            yield self.erase((x - self.mean) / self.std, gen, positions, epoch, step), self.labels[index], []


class TensorEvalBatches:
    def __init__(self, images, labels, batch, rank, world, mean, std):
        self.images, self.labels, self.batch = images, labels, batch
        self.index = torch.arange(rank, len(images), world)  # every image once over all processes
        self.mean = torch.tensor(mean).view(1, -1, 1, 1)
        self.std = torch.tensor(std).view(1, -1, 1, 1)

    def __len__(self) -> int:
        return -(-len(self.index) // self.batch)

    def batches(self) -> Iterator[Batch]:
        for start in range(0, len(self.index), self.batch):
            index = self.index[start:start + self.batch]
            yield (self.images[index].float().div_(255) - self.mean) / self.std, self.labels[index], []


class FolderTrainBatches:
    def __init__(self, dataset: ImageFolderDataset, batch: int, rank: int, world: int, seed: int, workers: int):
        self.dataset, self.batch, self.rank, self.world = dataset, batch, rank, world
        self.seed, self.workers = seed, workers
        if len(self) == 0:
            raise DatasetError(f"{len(dataset)} training images in {dataset.root} are fewer than one batch of "
                               f"{batch} per process × {world} processes: lower optim.batch_size")

    def __len__(self) -> int:
        return (-(-len(self.dataset) // self.world)) // self.batch

    def batches(self, epoch: int, start_step: int = 0) -> Iterator[Batch]:
        self.dataset.set_epoch(epoch)
        order = torch.randperm(len(self.dataset), generator=generator(self.seed, epoch))
        mine = shard(len(self.dataset), self.world, self.rank, order)[start_step * self.batch:len(self) * self.batch]
        loader = DataLoader(self.dataset, batch_size=self.batch, sampler=mine.tolist(), drop_last=True,
                            num_workers=self.workers, collate_fn=collate_skipping,
                            persistent_workers=False, pin_memory=torch.cuda.is_available())
        yield from loader


class FolderEvalBatches:
    def __init__(self, dataset: ImageFolderDataset, batch: int, rank: int, world: int, workers: int):
        self.dataset, self.batch, self.workers = dataset, batch, workers
        self.index = list(range(rank, len(dataset), world))

    def __len__(self) -> int:
        return -(-len(self.index) // self.batch)

    def batches(self) -> Iterator[Batch]:
        yield from DataLoader(self.dataset, batch_size=self.batch, sampler=self.index, num_workers=self.workers,
                              collate_fn=collate_skipping)


@dataclass
class DataBundle:
    train: TensorTrainBatches | FolderTrainBatches
    val: TensorEvalBatches | FolderEvalBatches
    classes: list[str]
    in_chans: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    image_size: int


def fashion_mnist_tensors(cfg: ClassificationConfig) -> tuple[torch.Tensor, ...]:
    """(train images, train labels, val images, val labels): uint8 (N, 1, 28, 28) and int64, the config's splits and
    class-balanced subsets applied."""
    d, seed = cfg.data, cfg.engine.seed
    train_x, train_y = load_fashion_mnist(d.root or None, d.train_split, d.download)
    val_x, val_y = load_fashion_mnist(d.root or None, "test" if d.val_split in ("val", "test") else d.val_split)
    if d.train_subset:
        keep = balanced_subset(train_y, d.train_subset, seed)
        train_x, train_y = train_x[keep], train_y[keep]
    if d.val_subset:
        keep = balanced_subset(val_y, d.val_subset, seed + 1)
        val_x, val_y = val_x[keep], val_y[keep]
    return train_x.unsqueeze(1), train_y, val_x.unsqueeze(1), val_y


def _fashion_mnist(cfg: ClassificationConfig, batch: int, rank: int, world: int) -> DataBundle:
    d, seed = cfg.data, cfg.engine.seed
    train_x, train_y, val_x, val_y = fashion_mnist_tensors(cfg)
    pixels = train_x.float().div(255)
    mean, std = (round(pixels.mean().item(), 4),), (round(pixels.std().item(), 4),)
    return DataBundle(
        train=TensorTrainBatches(train_x, train_y, batch, rank, world, seed, d.pad_crop, mean, std, d.random_erasing),
        val=TensorEvalBatches(val_x, val_y, cfg.engine.eval_batch_size or max(batch, 256), rank, world, mean, std),
        classes=list(FASHION_MNIST_CLASSES), in_chans=1, mean=mean, std=std, image_size=train_x.shape[-1])


def _image_folder(cfg: ClassificationConfig, batch: int, rank: int, world: int) -> DataBundle:
    d = cfg.data
    root = Path(d.root)
    if d.train_transform == "imagenet":
        train_tf = imagenet_train_transform(d.train_crop, d.auto_augment, d.randaugment_ops,
                                            d.randaugment_magnitude, d.color_jitter, d.lighting, d.random_erasing)
        eval_tf = create_transform(cfg.model.name, crop=d.eval_crop)
        size = d.eval_crop or get_entry(cfg.model.name).eval.crop
    else:
        size = d.eval_crop or d.train_crop
        train_tf = small_image_train_transform(d.train_crop, d.pad_crop, IMAGENET_MEAN, IMAGENET_STD, d.random_erasing)
        eval_tf = small_image_eval_transform(size, IMAGENET_MEAN, IMAGENET_STD)
    train = ImageFolderDataset(root / d.train_split, train_tf, strict=d.strict, seed=cfg.engine.seed)
    val = ImageFolderDataset(root / d.val_split, eval_tf, classes=train.classes, strict=d.strict)
    for dataset, subset, seed in ((train, d.train_subset, cfg.engine.seed), (val, d.val_subset, cfg.engine.seed + 1)):
        if subset:
            keep = balanced_subset([label for _, label in dataset.samples], subset, seed)
            dataset.samples = [dataset.samples[i] for i in keep.tolist()]
    return DataBundle(
        train=FolderTrainBatches(train, batch, rank, world, cfg.engine.seed, d.workers),
        val=FolderEvalBatches(val, cfg.engine.eval_batch_size or batch, rank, world, d.workers),
        classes=train.classes, in_chans=3, mean=IMAGENET_MEAN, std=IMAGENET_STD, image_size=size)


def build_data(cfg: ClassificationConfig, per_process_batch: int, rank: int = 0, world: int = 1) -> DataBundle:
    """Datasets checked (missing, empty, unreadable folders) before any training starts."""
    if cfg.data.dataset == "fashion_mnist":
        return _fashion_mnist(cfg, per_process_batch, rank, world)
    return _image_folder(cfg, per_process_batch, rank, world)

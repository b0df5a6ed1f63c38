"""Iteration-based data (detection, segmentation): which images each process takes at every step, and the
seed each sample's augmentation draws from.

The order is a function of the step alone (a seeded permutation per pass over the data, cut into global
batches; process r takes the r-th contiguous share of a batch), so a run resumed at step k sees exactly the
images the uninterrupted run would have seen. Contiguous shares are the micro-batches one process would cut
the same batch into with ``optim.accum_steps`` = the number of processes. Each sample comes with a seed of
(seed, step, position in the global batch), and :class:`SeededSamples` draws its random flip / scale / crop
from that seed alone: the same augmentation on a resume, with any number of processes or loader workers.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import torch

from ..seeding import derive_seed


def iteration_indices(iteration: int, dataset_size: int, global_batch: int, seed: int, rank: int,
                      world: int) -> list[int]:
    """This process's dataset indices at ``iteration``: a seeded permutation per pass, cut in batches, the
    batch cut in ``world`` contiguous shares."""
    start = iteration * global_batch
    chosen: list[int] = []
    while len(chosen) < global_batch:
        epoch, offset = divmod(start + len(chosen), dataset_size)
        order = torch.randperm(dataset_size, generator=torch.Generator().manual_seed(seed * 100003 + epoch))
        chosen += order[offset: offset + global_batch - len(chosen)].tolist()
    share = global_batch // world
    return chosen[rank * share:(rank + 1) * share]


class IterationSampler(torch.utils.data.Sampler):
    """Batches of ``(dataset index, augmentation seed)`` for steps ``first``..``last - 1`` (:class:`SeededSamples`)."""

    def __init__(self, first: int, last: int, dataset_size: int, global_batch: int, seed: int, rank: int, world: int):
        self.args = (dataset_size, global_batch, seed, rank, world)
        self.first, self.last, self.seed = first, last, seed
        self.offset = rank * (global_batch // world)  # this process's first position in the global batch

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for iteration in range(self.first, self.last):
            indices = iteration_indices(iteration, *self.args)
            yield [(index, derive_seed(self.seed, 3, iteration, self.offset + i)) for i, index in enumerate(indices)]

    def __len__(self) -> int:
        return self.last - self.first


class SeededSamples(torch.utils.data.Dataset):
    """``dataset[index]`` with torch's and Python's random generators seeded from the sampler's seed for that
    sample (the caller's generator state is left as it was)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        index, seed = key
        state = random.getstate()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            random.seed(seed)
            sample = self.dataset[index]
        random.setstate(state)
        return sample



def iteration_batches(dataset, collate_fn, first: int, last: int, global_batch: int, seed: int, rank: int, world: int,
                      workers: int = 0) -> Iterator:
    """This process's batches for steps ``first``..``last - 1``: :class:`IterationSampler` order, seeded samples."""
    sampler = IterationSampler(first, last, len(dataset), global_batch, seed, rank, world)
    return iter(torch.utils.data.DataLoader(SeededSamples(dataset), batch_sampler=sampler, collate_fn=collate_fn,
                                            num_workers=workers, prefetch_factor=4 if workers else None))

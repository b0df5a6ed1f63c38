"""Iteration-based data order: which images each process takes at every iteration.

The order is a function of the iteration number alone (a seeded permutation per pass over the data,
cut into global batches; each process takes every world-th image of a batch), so a run resumed at
iteration k sees exactly the images the uninterrupted run would have seen, on any number of processes.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch


def iteration_indices(iteration: int, dataset_size: int, global_batch: int, seed: int, rank: int,
                      world: int) -> list[int]:
    """This process's dataset indices at ``iteration``: a seeded permutation per pass, cut in batches."""
    start = iteration * global_batch
    chosen: list[int] = []
    while len(chosen) < global_batch:
        epoch, offset = divmod(start + len(chosen), dataset_size)
        order = torch.randperm(dataset_size, generator=torch.Generator().manual_seed(seed * 100003 + epoch))
        chosen += order[offset: offset + global_batch - len(chosen)].tolist()
    return chosen[rank::world]


class IterationSampler(torch.utils.data.Sampler):
    def __init__(self, first: int, last: int, dataset_size: int, global_batch: int, seed: int, rank: int, world: int):
        self.args = (dataset_size, global_batch, seed, rank, world)
        self.first, self.last = first, last

    def __iter__(self) -> Iterator[list[int]]:
        for iteration in range(self.first, self.last):
            yield iteration_indices(iteration, *self.args)

    def __len__(self) -> int:
        return self.last - self.first

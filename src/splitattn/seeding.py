"""Seeds derived from (seed, epoch, step, …): randomness that is a pure function of where the run is.

Every random choice in training (sample order, augmentation, mixup, DropBlock masks, dropout)
draws from a seed derived here, so a run resumed from any checkpoint replays exactly the steps of
the uninterrupted run, on any number of data-loading workers.
"""

from __future__ import annotations

import hashlib

import torch


def derive_seed(*parts: int) -> int:
    """A 63-bit seed that depends on every part (order included)."""
    digest = hashlib.blake2b(repr(tuple(int(p) for p in parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def generator(*parts: int) -> torch.Generator:
    return torch.Generator().manual_seed(derive_seed(*parts))

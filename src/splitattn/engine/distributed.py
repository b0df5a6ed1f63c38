"""Process groups under ``torchrun``: gloo on CPU, nccl on GPU.

``torchrun --nproc_per_node N`` (and its multi-node flags) sets RANK / WORLD_SIZE / LOCAL_RANK.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def pick_device(choice: str, local_rank: int = 0) -> torch.device:
    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError("the cuda device was asked for but no CUDA device is available: use --device cpu "
                               "(engine.device=cpu in a config)")
        if local_rank >= torch.cuda.device_count():
            # NCCL refuses two ranks on one GPU, so more processes than GPUs cannot work
            raise RuntimeError(f"process LOCAL_RANK={local_rank} needs GPU {local_rank}, but this machine has "
                               f"{torch.cuda.device_count()}: use --nproc_per_node ≤ {torch.cuda.device_count()}, "
                               "or engine.device=cpu for gloo processes on the CPU")
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def init_distributed(device_choice: str = "auto") -> DistInfo:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); otherwise a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_choice, local_rank)
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        backend = "nccl" if device.type == "cuda" else "gloo"
        if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
            # torchrun keeps one store (at MASTER_ADDR:MASTER_PORT) across restarts; without a prefix per
            # attempt, a restarted job (--max-restarts) may read the dead workers' addresses and fail.
            base = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world, is_master=False,
                                 timeout=timedelta(minutes=30))
            attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
            store = dist.PrefixStore(f"/splitattn/attempt_{attempt}", base)
            dist.init_process_group(backend, store=store, rank=rank, world_size=world)
        else:
            dist.init_process_group(backend)
    return DistInfo(rank, world, local_rank, device)


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def shutdown_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every process when ``flag`` is true on any: decisions that every rank must take together."""
    value = torch.tensor([float(flag)], device=device)
    return bool(all_reduce_sum(value).item() > 0)


def gather_objects(obj) -> list:
    """``obj`` of every process (a list of one outside torchrun)."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return [obj]
    gathered: list = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered

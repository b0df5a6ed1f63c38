"""Two gloo processes against one: DDP with CPU sync-BN gives the single-process loss and gradients
on the same global batch, and splitattn's SyncBatchNorm equals BatchNorm over the full batch.

Run in float64: the stem gradients of a BN network are ill-conditioned (fp32 alone moves them by
~1e-3 relative), and in fp64 any mistake in the synchronised statistics or gradients stands out."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from splitattn import create_model
from splitattn.layers import SyncBatchNorm, convert_sync_batchnorm

WORLD = 2


def _global_batch():
    gen = torch.Generator().manual_seed(5)
    shapes = [(8, 3, 64, 64), (8, 16, 6, 6), (8, 16, 6, 6)]
    images, features, upstream = (torch.randn(*s, generator=gen, dtype=torch.float64) for s in shapes)
    return images, torch.randint(0, 5, (8,), generator=gen), features, upstream


def _fresh_model():
    torch.manual_seed(0)
    return create_model("resnest14", num_classes=5, zero_init_last=False).double()


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    torch.set_num_threads(1)
    images, labels, features, upstream = _global_batch()
    part = slice(rank * 4, (rank + 1) * 4)

    bn = SyncBatchNorm(16).double().train()
    x = features[part].clone().requires_grad_(True)
    out = bn(x)
    (out * upstream[part]).sum().backward()

    model = DistributedDataParallel(convert_sync_batchnorm(_fresh_model(), torch.device("cpu")).train())
    loss = nn.functional.cross_entropy(model(images[part]), labels[part])
    loss.backward()  # DDP averages the gradients over the two processes
    mean_loss = loss.detach().clone()
    dist.all_reduce(mean_loss)
    torch.save({"bn_out": out.detach(), "bn_grad_x": x.grad, "bn_grad_w": bn.weight.grad, "bn_mean": bn.running_mean,
                "bn_var": bn.running_var, "loss": mean_loss / WORLD,
                "grads": {n: p.grad for n, p in model.module.named_parameters()},
                "buffers": {n: b for n, b in model.module.named_buffers()}}, f"{out_dir}/rank{rank}.pt")
    dist.destroy_process_group()


def test_two_gloo_processes_equal_one_process_on_the_global_batch(tmp_path):
    mp.spawn(_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    images, labels, features, upstream = _global_batch()

    bn = nn.BatchNorm2d(16).double().train()
    x = features.clone().requires_grad_(True)
    out = bn(x)
    (out * upstream).sum().backward()
    close = {"rtol": 1e-9, "atol": 1e-10}
    torch.testing.assert_close(torch.cat([r["bn_out"] for r in ranks]), out.detach(), **close)
    torch.testing.assert_close(torch.cat([r["bn_grad_x"] for r in ranks]), x.grad, **close)
    torch.testing.assert_close(ranks[0]["bn_grad_w"] + ranks[1]["bn_grad_w"], bn.weight.grad, **close)
    for r in ranks:  # both processes hold the running statistics of the full batch
        torch.testing.assert_close(r["bn_mean"], bn.running_mean, **close)
        torch.testing.assert_close(r["bn_var"], bn.running_var, **close)

    model = _fresh_model().train()
    loss = nn.functional.cross_entropy(model(images), labels)
    loss.backward()
    for r in ranks:
        torch.testing.assert_close(r["loss"], loss.detach(), **close)
        for name, param in model.named_parameters():
            torch.testing.assert_close(r["grads"][name], param.grad, rtol=1e-8, atol=1e-10, msg=name)
        for name, buffer in model.named_buffers():
            torch.testing.assert_close(r["buffers"][name], buffer, **close, msg=name)

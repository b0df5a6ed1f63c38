"""Timing and memory primitives: median wall time per call, the machine's GEMM roof, peak memory."""

from __future__ import annotations

import resource
import statistics
import time
from collections.abc import Callable

import torch


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(fn: Callable[[], object], device: torch.device, warmup: int = 2, repeats: int = 5) -> float:
    """Median wall time of ``fn()`` over ``repeats`` calls after ``warmup`` calls (medians resist the
    odd slow call that a shared 2-core machine produces)."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def gemm_roof(dtype: torch.dtype, device: torch.device, size: int | None = None) -> float:
    """GFLOP/s of the faster of two dense products in ``dtype``: a large square ``torch.mm`` (BLAS) and, on the
    CPU, a large 1×1 convolution in NHWC (oneDNN), what this machine's convolutions can hope for. Both count:
    BLAS libraries may take a slow path on some CPUs (MKL on AMD), and oneDNN is what convolutions run on."""
    size = size or (8192 if device.type == "cuda" else 2048)
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    torch.mm(a, b)
    best = min(median_seconds(lambda: torch.mm(a, b), device, warmup=0, repeats=1) for _ in range(5))
    rate = 2 * size**3 / best / 1e9  # the best of five: a roof is what the machine can do at its fastest
    if device.type == "cpu":
        batch, channels, side = 16, 1024, 28
        conv = torch.nn.Conv2d(channels, channels, 1, bias=False).to(dtype).to(memory_format=torch.channels_last)
        x = torch.randn(batch, channels, side, side, dtype=dtype).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            conv(x)
            best = min(median_seconds(lambda: conv(x), device, warmup=0, repeats=1) for _ in range(5))
        rate = max(rate, 2 * batch * channels**2 * side**2 / best / 1e9)
    return rate


def current_rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize() / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB

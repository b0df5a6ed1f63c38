"""`splitattn bench`: inference / training throughput and memory against peers, with the machine's roof."""

from .suite import BenchConfig, run_bench

__all__ = ["BenchConfig", "run_bench"]

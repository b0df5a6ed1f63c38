"""A torchrun worker for tests/test_engine.py: the engine on a toy task where ONE rank meets a non-finite loss
or a SIGTERM at a step the other rank does not (``python -m tests.ddp_stop_worker nan|sigterm OUT_DIR``).

Each rank writes ``OUT_DIR/rank<r>.json``: the step it stopped at and how (exit code 2 for a non-finite loss)."""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from splitattn.engine import EngineConfig, OptimConfig, Task, TaskConfig, Trainer, TrainingError
from splitattn.engine.distributed import shutdown_distributed

TRIGGER_STEP = 3  # 0-based: the 4th step


@dataclass
class ToyConfig(TaskConfig):
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(batch_size=8))
    engine: EngineConfig = field(default_factory=EngineConfig)


class ToyTask(Task):
    name = "toy"

    def __init__(self, cfg: ToyConfig, mode: str):
        super().__init__(cfg)
        self.mode, self.step = mode, 0

    def setup(self, trainer: Trainer) -> None:
        self.rank, self.world = trainer.dist.rank, trainer.dist.world

    def build_model(self) -> nn.Module:
        return nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 1))

    def total_steps(self) -> int:
        return 12

    def learning_rate(self, step: int) -> float:
        return 0.05

    def batches(self, start_step: int) -> Iterator:
        for step in range(start_step, self.total_steps()):
            gen = torch.Generator().manual_seed(step)
            x = torch.randn(self.cfg.optim.batch_size, 4, generator=gen)
            yield x[self.rank::self.world], x[self.rank::self.world].sum(1, keepdim=True)

    def before_step(self, model: nn.Module, step: int) -> None:
        self.step = step
        if self.mode == "sigterm" and self.rank == 1 and step == TRIGGER_STEP:
            os.kill(os.getpid(), signal.SIGTERM)  # this rank only: the other never receives a signal

    def losses(self, model: nn.Module, batch) -> dict:
        x, y = batch
        loss = nn.functional.mse_loss(model(x), y)
        if self.mode == "nan" and self.rank == 1 and self.step == TRIGGER_STEP:
            loss = loss * float("nan")  # this rank only
        return {"loss": loss}


def main() -> int:
    mode, out_dir = sys.argv[1], Path(sys.argv[2])
    cfg = ToyConfig(engine=EngineConfig(out_dir=str(out_dir), device="cpu", checkpoint_every_steps=1,
                                        progress=False, tensorboard=False, log_every_steps=1))
    trainer = Trainer(ToyTask(cfg, mode))
    record = {"rank": trainer.dist.rank}
    try:
        summary = trainer.train()
        record.update(step=summary.step, stopped=summary.stopped, exit=0)
    except TrainingError as err:
        record.update(step=trainer.step, stopped=str(err), exit=2)
    finally:
        shutdown_distributed()
    (out_dir / f"rank{record['rank']}.json").write_text(json.dumps(record))
    return record["exit"]


if __name__ == "__main__":
    sys.exit(main())

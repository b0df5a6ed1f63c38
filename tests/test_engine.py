"""The one engine: stop decisions agreed across ranks (a NaN or a SIGTERM on one rank only), micro-batches,
gradient accumulation, hooks, and two machines' worth of torchrun agents."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import torch

from splitattn.engine import HookBase, Trainer
from splitattn.engine.loop import batch_len, split_batch
from tests.ddp_stop_worker import TRIGGER_STEP, ToyConfig, ToyTask

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _two_ranks(mode: str, out) -> tuple[subprocess.CompletedProcess, list[dict], float]:
    started = time.time()
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--rdzv-backend",
                           "c10d", "--rdzv-endpoint", "127.0.0.1:0", "-m", "tests.ddp_stop_worker", mode, str(out)],
                          capture_output=True, text=True, env=ENV, timeout=180)  # a hang fails here
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    return done, ranks, time.time() - started


def test_a_nan_on_one_rank_stops_both_before_the_update(tmp_path):
    """Before the engine agreed on it, the rank with the NaN stopped and the other waited in the next gradient
    all-reduce forever. Now both see it in the step's one all-reduce and stop without applying that update."""
    done, ranks, seconds = _two_ranks("nan", tmp_path)
    assert done.returncode != 0 and seconds < 120
    assert [r["exit"] for r in ranks] == [2, 2], ranks
    assert [r["step"] for r in ranks] == [TRIGGER_STEP, TRIGGER_STEP]
    assert all(f"loss became nan at step {TRIGGER_STEP + 1}" in r["stopped"] for r in ranks)
    ckpt = torch.load(tmp_path / "checkpoints" / "last.pth", weights_only=True)
    assert ckpt["step"] == TRIGGER_STEP and all(torch.isfinite(v).all() for v in ckpt["model"].values())


def test_a_sigterm_on_one_rank_stops_both_at_the_same_step_and_saves(tmp_path):
    done, ranks, seconds = _two_ranks("sigterm", tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert seconds < 120
    # the signal arrives during step TRIGGER_STEP + 1 on rank 1; every rank finishes that step, saves and stops
    assert [r["step"] for r in ranks] == [TRIGGER_STEP + 1] * 2, ranks
    assert "SIGTERM received" in ranks[1]["stopped"] and "on another process" in ranks[0]["stopped"]
    ckpt = torch.load(tmp_path / "checkpoints" / "last.pth", weights_only=True)
    assert ckpt["step"] == TRIGGER_STEP + 1 and ckpt["task"] == "toy"


def test_split_batch_cuts_tensors_lists_and_fields_alike():
    images = torch.arange(10).view(5, 2)
    targets = [{"boxes": torch.full((i + 1, 4), i)} for i in range(5)]
    parts = split_batch((images, targets, {"ids": torch.arange(5)}), 2)
    assert [batch_len(p) for p in parts] == [3, 2]
    assert torch.equal(parts[1][0], images[3:]) and parts[1][1] == targets[3:]
    assert torch.equal(parts[0][2]["ids"], torch.tensor([0, 1, 2]))
    assert split_batch(images, 1)[0] is images


def _toy_losses(tmp_path, accum: int, name: str) -> dict[int, float]:
    cfg = ToyConfig()
    cfg.optim.accum_steps, cfg.engine.out_dir = accum, str(tmp_path / name)
    cfg.engine.device, cfg.engine.progress, cfg.engine.log_every_steps = "cpu", False, 1
    Trainer(ToyTask(cfg, "none")).train()
    return {r["step"]: r["loss"] for r in map(json.loads, (tmp_path / name / "steps.jsonl").read_text().splitlines())}


def test_gradient_accumulation_gives_the_losses_of_the_whole_batch(tmp_path):
    whole, accumulated = _toy_losses(tmp_path, 1, "whole"), _toy_losses(tmp_path, 4, "accumulated")
    assert sorted(whole) == list(range(1, 13))
    assert all(accumulated[s] == pytest.approx(whole[s], rel=1e-5) for s in whole)


def test_hooks_run_in_order_and_a_finished_run_is_not_trained_again(tmp_path):
    calls = []

    class Spy(HookBase):
        def before_train(self):
            calls.append(("before_train", self.trainer.step))

        def after_step(self):
            calls.append(("after_step", self.trainer.step))

        def after_train(self):
            calls.append(("after_train", self.trainer.step))

    cfg = ToyConfig()
    cfg.engine.out_dir, cfg.engine.device, cfg.engine.progress = str(tmp_path), "cpu", False
    summary = Trainer(ToyTask(cfg, "none"), hooks=[Spy()]).train()
    assert summary.step == 12 and calls[0] == ("before_train", 0) and calls[-1] == ("after_train", 12)
    assert [c[1] for c in calls if c[0] == "after_step"] == list(range(1, 13))
    calls.clear()
    cfg.engine.resume = "auto"
    again = Trainer(ToyTask(cfg, "none"), hooks=[Spy()]).train()
    assert again.step == 12 and calls == [("before_train", 12), ("after_train", 12)]


def test_resume_auto_before_the_first_checkpoint_starts_afresh_but_a_new_run_is_refused(tmp_path):
    """A torchrun restart before any checkpoint finds only the step log: with --resume auto it trains from the
    start; without it, the folder is another run's and the new run is refused."""
    from splitattn.engine import ConfigError

    (tmp_path / "steps.jsonl").write_text('{"step": 1, "loss": 1.0}\n')
    cfg = ToyConfig()
    cfg.engine.out_dir, cfg.engine.device, cfg.engine.progress = str(tmp_path), "cpu", False
    with pytest.raises(ConfigError, match="already holds a run"):
        Trainer(ToyTask(cfg, "none"))
    cfg.engine.resume = "auto"
    assert Trainer(ToyTask(cfg, "none")).train().step == 12


def test_a_compiled_training_module_gives_the_eager_losses(tmp_path):
    """engine.compile: torch.compile of the training module (evaluation and checkpoints use the plain one)."""
    eager = _toy_losses(tmp_path, 1, "eager")
    cfg = ToyConfig()
    cfg.engine.out_dir, cfg.engine.device, cfg.engine.progress, cfg.engine.log_every_steps = \
        str(tmp_path / "compiled"), "cpu", False, 1
    cfg.engine.compile = True
    trainer = Trainer(ToyTask(cfg, "none"))
    assert trainer.train_module is not trainer.model and hasattr(trainer.train_module, "_orig_mod")
    trainer.train()
    compiled = {r["step"]: r["loss"] for r in map(json.loads, (tmp_path / "compiled" / "steps.jsonl").read_text()
                                                  .splitlines())}
    assert all(compiled[s] == pytest.approx(eager[s], rel=1e-5) for s in eager)
    saved = torch.load(tmp_path / "compiled" / "checkpoints" / "last.pth", weights_only=True)
    assert not any(k.startswith("_orig_mod") for k in saved["model"])  # the plain module's keys

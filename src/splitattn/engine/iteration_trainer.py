"""The iteration-based training loop shared by detection and segmentation (detectron2-style schedules).

A task subclass supplies the datasets, the model, the learning rate at an iteration, the loss terms of
a batch, evaluation and pictures; this class gives them the engine qualities of classification: one
loop for a single process and torchrun DDP (SyncBN converted to torch's on GPU), an image order that
depends on the iteration alone (exact resume), AMP (bf16 on CPU/GPU, fp16 + grad scaler on GPU),
atomic checkpoints every N iterations and at the end, SIGTERM / SIGINT save and stop, a non-finite loss
stops the run with the last good checkpoint kept, tqdm with loss / lr / images/s / ETA, JSONL logs
(+ TensorBoard), evaluation every N iterations and at the end, and (for tasks whose schedule follows
``optim.max_iters``) an optional time budget that fits the iteration count to the machine's measured speed.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from ..layers import convert_sync_batchnorm
from ..models.weights import CheckpointError, read_checkpoint_file
from .checkpoint import LAST, atomic_save, find_resume
from .distributed import DistInfo, barrier, init_distributed, shutdown_distributed
from .evaluate import autocast
from .iterations import IterationSampler
from .logbook import Logbook
from .trainer import StopSignal, TrainingError, unwrap


@dataclass
class IterationEngineConfig:
    out_dir: str = "runs/task"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: Literal["none", "bf16", "fp16"] = "none"
    seed: int = 1
    resume: str = ""  # '' | 'auto' | a checkpoint path
    checkpoint_every_iters: int = 5000
    eval_every_iters: int = 0  # 0: only at the end
    eval_batch_size: int = 4
    log_every_iters: int = 20
    tensorboard: bool = True
    progress: bool = True


@dataclass
class IterationSummary:
    out_dir: str
    kind: str
    backbone: str
    iterations: int = 0
    wall_s: float = 0.0
    train_s: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)
    stopped: str = ""
    data_problems: dict[str, int] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)


def _plain(value):
    """tv_tensors → plain tensors (torchvision's detection code expects those)."""
    return value.as_subclass(torch.Tensor) if isinstance(value, torch.Tensor) else value


def to_device(value, device: torch.device):
    """Tensors (also inside lists and dicts) to ``device`` as plain tensors."""
    if isinstance(value, torch.Tensor):
        return _plain(value).to(device, non_blocking=True)
    if isinstance(value, dict):
        return {k: to_device(v, device) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_device(v, device) for v in value]
    return value


def read_task_checkpoint(path: str | Path, task: str, command: str) -> dict[str, Any]:
    """A checkpoint written by ``command`` (its ``task`` entry holds what rebuilding the model needs)."""
    ckpt = read_checkpoint_file(path)
    if not isinstance(ckpt, dict) or task not in ckpt:
        raise CheckpointError(f"{path} is not a splitattn {task} checkpoint (no {task!r} entry); "
                              f"train one with `{command}`")
    return ckpt


class IterationTrainer:
    """Subclasses set ``task`` / ``command`` and implement the hooks below; ``run()`` trains."""

    task = "task"
    command = "splitattn"

    # ------------------------------------------------------------------ hooks
    def build(self) -> tuple[Any, nn.Module, list[dict]]:
        """(training dataset, model on CPU, optimizer parameter groups with a ``lr_mult`` each)."""
        raise NotImplementedError

    def learning_rate(self, iteration: int) -> float:
        raise NotImplementedError

    def losses(self, batch) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def evaluate(self, iteration: int) -> dict[str, float]:
        return {}

    def checkpoint_meta(self) -> dict[str, Any]:
        return {}

    def artifacts(self) -> dict[str, str]:
        return {}

    def collate(self, batch):
        raise NotImplementedError

    def wrap_model(self, model: nn.Module) -> nn.Module:
        """The training module on its device, before DDP (e.g. torch.compile); the plain one by default."""
        return model

    def time_budget_s(self) -> float:
        """> 0: fit ``optim.max_iters`` to this much training time (for schedules that follow max_iters)."""
        return 0.0

    # ------------------------------------------------------------------ set-up
    def __init__(self, cfg, dist_info: DistInfo | None = None):
        self.cfg = cfg
        e, o = cfg.engine, cfg.optim
        self.dist = dist_info or init_distributed(e.device)
        self.device = self.dist.device
        self.out_dir = Path(e.out_dir)
        torch.manual_seed(e.seed + self.dist.rank)
        if o.batch_size % self.dist.world:
            raise TrainingError(f"optim.batch_size {o.batch_size} is not divisible by {self.dist.world} processes")
        if e.amp == "fp16" and self.device.type != "cuda":
            raise TrainingError("engine.amp=fp16 needs a GPU; use engine.amp=bf16 on the CPU")
        self.train_set, model, groups = self.build()
        if len(self.train_set) == 0:
            raise TrainingError("the training set is empty: check data paths and splits")
        self.model = model.to(self.device)
        if self.dist.enabled and self.device.type == "cuda":
            self.model = convert_sync_batchnorm(self.model, self.device)
        self.model = self.wrap_model(self.model)
        if self.dist.enabled:
            self.model = DistributedDataParallel(self.model, device_ids=[self.device] if self.device.type == "cuda"
                                                 else None)
        self.optimizer = torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum)
        self.scaler = torch.amp.GradScaler("cuda", enabled=e.amp == "fp16" and self.device.type == "cuda")
        self.logbook = Logbook(self.out_dir, enabled=self.dist.is_main, tensorboard=e.tensorboard)
        self.start_iter = 0
        self.fitted_max_iters: int | None = None  # set by a time budget
        resume = find_resume(self.out_dir, e.resume)
        if resume is not None:
            self._restore(resume)
        elif self.dist.is_main:
            self.logbook.reset()

    # ------------------------------------------------------------------ checkpoints
    def _save(self, iteration: int) -> Path:
        path = self.out_dir / "checkpoints" / LAST
        if self.dist.is_main:
            atomic_save({"model": unwrap(self.model).state_dict(), "optimizer": self.optimizer.state_dict(),
                         "scaler": self.scaler.state_dict(), "iteration": iteration, "config": self.cfg.to_dict(),
                         "fitted_max_iters": self.fitted_max_iters,
                         self.task: self.checkpoint_meta()}, path)
        barrier()
        return path

    def _restore(self, path: Path) -> None:
        ckpt = read_task_checkpoint(path, self.task, self.command)
        mine = self.checkpoint_meta()
        if ckpt[self.task].get("num_classes") != mine.get("num_classes"):
            raise CheckpointError(f"{path} was trained with num_classes={ckpt[self.task].get('num_classes')}, this "
                                  f"run has {mine.get('num_classes')}: resume only the same run")
        unwrap(self.model).load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scaler.load_state_dict(ckpt["scaler"])
        self.start_iter = int(ckpt["iteration"])
        # a time-budgeted run resumes with the iteration count it was fitted to (its schedule's end); other
        # runs take optim.max_iters from this command (resuming with a longer schedule extends it)
        if ckpt.get("fitted_max_iters"):
            self.fitted_max_iters = self.cfg.optim.max_iters = int(ckpt["fitted_max_iters"])
        if self.dist.is_main:
            print(f"resumed from {path} at iteration {self.start_iter} of {self.cfg.optim.max_iters}", flush=True)

    # ------------------------------------------------------------------ time budget
    FIT_FROM, FIT_AT = 10, 60  # time iterations 10..60 of a fresh run (after compile and warm-up), then fit

    def _fit_to_budget(self, iteration: int, remaining_s: float, step_s: float) -> None:
        """Lower ``optim.max_iters`` so the iterations left take ``remaining_s`` at ``step_s`` each (2 % spare)."""
        o = self.cfg.optim
        fitted = max(iteration, min(o.max_iters, iteration + int(0.98 * remaining_s / step_s)))
        if self.dist.enabled:  # every process must stop at the same iteration
            agreed = torch.tensor([fitted], device=self.device)
            torch.distributed.broadcast(agreed, 0)
            fitted = int(agreed.item())
        if self.dist.is_main:
            print(f"time budget: {step_s:.3f} s per iteration, {remaining_s / 60:.1f} min left → {fitted} "
                  f"iterations (optim.max_iters was {o.max_iters})", flush=True)
        o.max_iters = self.fitted_max_iters = fitted

    # ------------------------------------------------------------------ loop
    def _loader(self):
        o, workers = self.cfg.optim, self.cfg.data.workers
        sampler = IterationSampler(self.start_iter, o.max_iters, len(self.train_set), o.batch_size,
                                   self.cfg.engine.seed, self.dist.rank, self.dist.world)
        return torch.utils.data.DataLoader(self.train_set, batch_sampler=sampler, collate_fn=self.collate,
                                           num_workers=workers, prefetch_factor=4 if workers else None)

    def step(self, batch, lr: float) -> dict[str, float]:
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_mult", 1.0)
        with autocast(self.device, self.cfg.engine.amp):
            losses = self.losses(to_device(batch, self.device))
        total = sum(losses.values())
        if not torch.isfinite(total):
            terms = {k: round(v.item(), 4) for k, v in losses.items()}
            raise TrainingError(f"loss is {total.item()} ({terms}): lower optim.lr or lengthen the warm-up; "
                                "the last good checkpoint is kept")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        if self.cfg.optim.grad_clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(unwrap(self.model).parameters(), self.cfg.optim.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return {"loss": total.item(), **{k: v.item() for k, v in losses.items()}}

    def _evaluate_and_log(self, iteration: int) -> dict[str, float]:
        metrics = self.evaluate(iteration)
        self.model.train()
        if self.dist.is_main and metrics:
            self.logbook.epoch({"epoch": iteration, "step": iteration, **metrics})
        return metrics

    def describe(self) -> str:
        o = self.cfg.optim
        return (f"{self.dist.world} process(es) × {o.batch_size // self.dist.world} images (global batch "
                f"{o.batch_size}) on {self.device}, {len(self.train_set)} training images")

    def run(self) -> IterationSummary:
        cfg, o, e = self.cfg, self.cfg.optim, self.cfg.engine
        started = time.time()
        problems = dict(getattr(self.train_set, "problems", {}))
        summary = IterationSummary(str(self.out_dir), cfg.model.kind, cfg.model.backbone, data_problems=problems)
        if self.dist.is_main:
            print(self.describe(), flush=True)
            if problems:
                print(self.train_set.problem_report(), flush=True)
        self.model.train()
        iteration = self.start_iter
        bar = tqdm(total=o.max_iters, initial=iteration, desc=f"{cfg.model.kind} {cfg.model.backbone}",
                   disable=not (e.progress and self.dist.is_main), dynamic_ncols=True)
        window_start, window_images = time.time(), 0
        budget_s = self.time_budget_s() if self.start_iter == 0 else 0.0
        with StopSignal() as stop:
            for batch in self._loader():
                lr = self.learning_rate(iteration)
                try:
                    record = self.step(batch, lr)
                except TrainingError as err:
                    summary.stopped = str(err)
                    break
                iteration += 1
                window_images += o.batch_size
                bar.update(1)
                if budget_s and iteration == self.FIT_FROM:
                    fit_start = time.time()
                elif budget_s and iteration == self.FIT_AT:
                    step_s = (time.time() - fit_start) / (self.FIT_AT - self.FIT_FROM)
                    self._fit_to_budget(iteration, budget_s - (time.time() - started), step_s)
                    bar.total = o.max_iters
                    bar.refresh()
                if iteration % e.log_every_iters == 0 or iteration == o.max_iters:
                    speed = window_images / max(time.time() - window_start, 1e-9)
                    window_start, window_images = time.time(), 0
                    bar.set_postfix(loss=f"{record['loss']:.3f}", lr=f"{lr:.4g}", img_s=f"{speed:.1f}")
                    self.logbook.step({"step": iteration, "lr": lr, "images_per_s": speed, **record})
                if e.checkpoint_every_iters and iteration % e.checkpoint_every_iters == 0:
                    self._save(iteration)
                if e.eval_every_iters and iteration % e.eval_every_iters == 0 and iteration < o.max_iters:
                    self._evaluate_and_log(iteration)
                if stop.name:
                    summary.stopped = f"{stop.name} received at iteration {iteration}; resume with engine.resume=auto"
                    break
                if iteration >= o.max_iters:  # a fitted budget ends before the image order does
                    break
        bar.close()
        summary.iterations, summary.train_s = iteration, time.time() - started
        if iteration > self.start_iter or not (self.out_dir / "checkpoints" / LAST).exists():
            summary.files["checkpoint"] = str(self._save(iteration))
        if not summary.stopped or iteration == o.max_iters:
            summary.metrics = self._evaluate_and_log(iteration)
        if self.dist.is_main:
            summary.files["log"] = str(self.logbook.steps_path)
            summary.files.update(self.artifacts())
        self.logbook.close()
        summary.wall_s = time.time() - started
        return summary


def train_with(trainer_class: type[IterationTrainer], cfg, summary_json: str | Path | None = None) -> IterationSummary:
    """Build ``trainer_class(cfg)``, run it, leave the process group, and write the summary JSON (main process)."""
    trainer = trainer_class(cfg)
    try:
        summary = trainer.run()
    finally:
        barrier()
        shutdown_distributed()
    if summary_json and trainer.dist.is_main:
        Path(summary_json).parent.mkdir(parents=True, exist_ok=True)
        Path(summary_json).write_text(json.dumps({**asdict(summary), "config": cfg.to_dict()}, indent=2) + "\n")
    return summary

"""The one training loop of every task, in the spirit of detectron2's ``TrainerBase`` and hooks.

A :class:`Task` says what is specific (data, model, loss terms, schedule, evaluation, what a checkpoint
must hold to rebuild the model); :class:`Trainer` runs optimizer steps for any task, on one process or
under ``torchrun`` (DDP; CPU gloo or GPU nccl), and :class:`HookBase` objects do the rest: the learning
rate, evaluation, checkpoints, logs (see :mod:`splitattn.engine.hooks`).

What every task gets:

* **exact resume**: batches are a function of the step number (the task's order), and every random
  draw in a step is seeded from where it happens: the task's ``prepare`` (mixup) from (seed, rank, step),
  each micro-batch's forward (dropout, DropBlock, detection's proposal sampling) from (seed, step, global
  micro-batch index). A resumed run replays the losses of the uninterrupted one, and one process cutting a
  batch into N micro-batches draws what N processes draw for the same micro-batches;
* gradient accumulation (``optim.accum_steps``), AMP (bf16; fp16 + grad scaler on GPU), channels_last,
  ``torch.compile``, synchronised BatchNorm (``engine.sync_bn``), gradient clipping;
* **decisions taken together**: each step ends with one all-reduce of the loss terms, the image count, a
  non-finite-loss flag and a stop-signal flag, so every rank applies the same update and stops at the same
  step. A non-finite loss on any rank stops all of them before the update (the last good checkpoint is
  kept); SIGTERM / SIGINT on any rank finishes the step, saves and stops all of them.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from contextlib import nullcontext, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from .. import __version__
from ..allocator import keep_freed_memory
from ..layers import SyncBatchNorm, convert_sync_batchnorm, needs_two_samples
from ..models.weights import CheckpointError, atomic_save, read_checkpoint_file
from ..seeding import derive_seed
from .checkpoint import FORMAT, LAST, checkpoint_task, existing_run, find_resume
from .config import ConfigError, TaskConfig
from .distributed import DistInfo, all_reduce_sum, any_rank, barrier, init_distributed
from .ema import ModelEma, build_ema
from .logbook import Logbook
from .optim import parameter_groups

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class TrainingError(RuntimeError):
    """The run cannot go on (diverged, inconsistent resume); the message says why and what to do."""


def autocast(device: torch.device, amp: str):
    """``torch.autocast`` for ``amp`` 'bf16' / 'fp16', nothing for 'none'."""
    return nullcontext() if amp == "none" else torch.autocast(device.type, dtype=AMP_DTYPES[amp])


def to_device(value: Any, device: torch.device, channels_last: bool = False) -> Any:
    """Tensors (also inside tuples, lists and dicts) to ``device`` as plain tensors; 4-D float ones in
    channels_last when asked."""
    if isinstance(value, torch.Tensor):
        value = value.as_subclass(torch.Tensor).to(device, non_blocking=True)  # tv_tensors → plain tensors
        if channels_last and value.dim() == 4 and value.is_floating_point():
            value = value.contiguous(memory_format=torch.channels_last)
        return value
    if isinstance(value, dict):
        return {k: to_device(v, device, channels_last) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_device(v, device, channels_last) for v in value)
    return value


def batch_len(batch: Any) -> int:
    """Samples in a batch: a tensor's first dimension, a list's length, a tuple's (or dict's) first field's."""
    if isinstance(batch, torch.Tensor):
        return batch.shape[0]
    if isinstance(batch, list):
        return len(batch)
    if isinstance(batch, tuple):
        return batch_len(batch[0])
    if isinstance(batch, dict):
        return batch_len(next(iter(batch.values())))
    raise TypeError(f"cannot tell the batch size of a {type(batch).__name__}")


def split_batch(batch: Any, parts: int) -> list[Any]:
    """``batch`` cut into ``parts`` micro-batches along the samples (tuples and dicts are fields, lists and
    tensors are samples), with the sizes of ``Tensor.chunk``."""
    if parts == 1:
        return [batch]
    sizes = [len(c) for c in torch.arange(batch_len(batch)).chunk(parts)]

    def cut(value: Any) -> list[Any]:
        if isinstance(value, torch.Tensor):
            return list(value.split(sizes))
        if isinstance(value, list):
            starts = [sum(sizes[:i]) for i in range(len(sizes))]
            return [value[s:s + n] for s, n in zip(starts, sizes)]
        if isinstance(value, tuple):
            return [tuple(fields) for fields in zip(*(cut(v) for v in value))]
        if isinstance(value, dict):
            pieces = {k: cut(v) for k, v in value.items()}
            return [{k: pieces[k][i] for k in value} for i in range(len(sizes))]
        return [value] * len(sizes)

    return cut(batch)


class StopSignal:
    """Remember SIGTERM / SIGINT instead of dying mid-step; restore the old handlers afterwards."""

    def __init__(self):
        self.name = ""
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            with suppress(ValueError):  # not the main thread: leave signals alone
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, _frame):
        self.name = signal.Signals(signum).name

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class Task:
    """What a task gives the engine. Subclasses set the class attributes and implement the methods."""

    name = "task"  # the checkpoints' "task" entry
    metrics: tuple[str, ...] = ()  # validation metrics drawn in curves.png
    best_metric: str | None = None  # higher is better; best.pth keeps the evaluation where it peaked

    def __init__(self, cfg: TaskConfig):
        self.cfg = cfg

    # ---- set-up: called in this order by the Trainer
    def setup(self, trainer: Trainer) -> None:
        """Build the data; ``trainer.dist`` and ``trainer.per_process_batch`` say how the batch is shared."""

    def build_model(self) -> nn.Module:
        raise NotImplementedError

    def param_groups(self, model: nn.Module) -> list[dict]:
        """Optimizer groups; a group's ``lr_mult`` scales the scheduled learning rate."""
        return parameter_groups(model, self.cfg.optim.weight_decay)

    # ---- the schedule
    def total_steps(self) -> int:
        raise NotImplementedError

    def period(self) -> int:
        """Steps between evaluations and checkpoints when the engine config says 0."""
        return self.total_steps()

    def learning_rate(self, step: int) -> float:
        """The learning rate of optimizer step ``step`` (0-based)."""
        raise NotImplementedError

    def position(self, step: int) -> dict[str, Any]:
        """Where step ``step`` (steps done) is in the task's own terms, logged beside it (e.g. the epoch)."""
        return {}

    # ---- steps
    def batches(self, start_step: int) -> Iterator[Any]:
        """One batch per step from ``start_step`` on: the same batches whenever the run is resumed."""
        raise NotImplementedError

    def before_step(self, model: nn.Module, step: int) -> None:
        """Per-step changes to the model (e.g. DropBlock's ramp); ``model`` is the plain module."""

    def prepare(self, batch: Any, step: int) -> Any:
        """The batch on the device, before it is cut into micro-batches (e.g. mixup of the whole batch)."""
        return batch

    def losses(self, model: nn.Module, batch: Any) -> dict[str, torch.Tensor]:
        """Loss terms of one micro-batch; the engine minimises their sum."""
        raise NotImplementedError

    # ---- evaluation, checkpoints, the end
    def evaluate(self, model: nn.Module, step: int, final: bool) -> dict[str, float]:
        """Validation metrics, on every process (distributed evaluation reduces them); {} without a validation set."""
        return {}

    def meta(self) -> dict[str, Any]:
        """What rebuilding the trained model needs (architecture, classes, preprocessing): stored in checkpoints."""
        return {}

    def check_resume(self, meta: dict[str, Any], path: Path) -> None:
        """Refuse a checkpoint of another model (raise CheckpointError saying what differs)."""
        if meta != self.meta():
            raise CheckpointError(f"cannot resume from {path}: it was trained as {meta}, this config builds "
                                  f"{self.meta()}. Use another engine.out_dir, or start afresh with --overwrite")

    def describe(self) -> str:
        return ""

    def finish(self, model: nn.Module, out_dir: Path, metrics: dict[str, Any]) -> dict[str, str]:
        """Pictures and reports at the end of training (main process); returns their paths by name."""
        return {}

    def notes(self) -> list[str]:
        """Things the user should know at the end (e.g. unreadable files skipped); called on every process
        (collectives allowed), the main process's are reported."""
        return []


class HookBase:
    """Something done around the steps; ``self.trainer`` is set when the Trainer takes the hook."""

    trainer: Trainer

    def before_train(self) -> None: ...
    def before_step(self) -> None: ...
    def after_step(self) -> None: ...
    def after_train(self) -> None: ...

    def close(self) -> None:
        """Always called at the end, also when training failed."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@dataclass
class RunSummary:
    task: str
    out_dir: str
    step: int = 0
    total_steps: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)  # the last evaluation
    best: dict[str, Any] | None = None  # {"metric", "value", "step"} of best.pth
    stopped: str = ""  # '' when training ran to its end; else why not
    wall_s: float = 0.0
    files: dict[str, str] = field(default_factory=dict)  # on the main process
    notes: list[str] = field(default_factory=list)
    main_process: bool = True  # under torchrun, only the main process's summary reports (and writes files)


class Trainer:
    """Runs ``task`` as its config's ``engine`` and ``optim`` sections say; ``train()`` returns a RunSummary."""

    def __init__(self, task: Task, dist_info: DistInfo | None = None, hooks: list[HookBase] | None = None):
        from .hooks import default_hooks  # the hooks module uses the Trainer's names

        self.task, self.cfg = task, task.cfg
        e, o = self.cfg.engine, self.cfg.optim
        self.dist = dist_info or init_distributed(e.device)
        self.device = self.dist.device
        self.out_dir = Path(e.out_dir)
        if e.amp == "fp16" and self.device.type != "cuda":
            raise ConfigError("engine.amp=fp16 needs a GPU (its grad scaler is CUDA-only): use engine.amp=bf16 on CPU")
        if o.batch_size % (self.dist.world * o.accum_steps):
            raise ConfigError(f"optim.batch_size={o.batch_size} is not divisible by {self.dist.world} process(es) "
                              f"× optim.accum_steps={o.accum_steps}")
        self.per_process_batch = o.batch_size // self.dist.world
        self.micro_batch = self.per_process_batch // o.accum_steps
        if self.device.type == "cpu":
            keep_freed_memory()  # allocator.py: no page-fault storm from re-allocating each step's activations
        torch.manual_seed(e.seed)
        if e.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        elif self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        resume = self._check_out_dir()

        task.setup(self)
        self.ema: ModelEma | None = None  # engine.ema_decay > 0: set by _build_model
        self.evaluating = "model"  # which weights an evaluation runs on: "model" | "ema" (tasks that write files)
        self.model = self._build_model()
        self.optimizer = torch.optim.SGD(task.param_groups(self.model), lr=0.0, momentum=o.momentum,
                                         nesterov=o.nesterov and o.momentum > 0)
        self.scaler = torch.amp.GradScaler("cuda") if e.amp == "fp16" else None
        self.total_steps = task.total_steps()
        self.max_steps = min(self.total_steps, e.max_steps or self.total_steps)
        self.step = self.start_step = 0
        self.lr = 0.0
        self.record: dict[str, float] = {}  # the last step's all-reduced loss terms
        self.metrics: dict[str, Any] = {}  # the last evaluation
        self.metrics_step = -1
        self.stop_reason = ""
        self.interrupted = False  # a signal stopped the run (no final evaluation)
        self.logbook = Logbook(self.out_dir, enabled=self.dist.is_main, tensorboard=e.tensorboard)
        self.hooks: list[HookBase] = []
        for hook in default_hooks(self) + list(hooks or []):
            hook.trainer = self
            self.hooks.append(hook)
        if resume is not None:
            self._restore(resume)
        elif self.dist.is_main:
            self.logbook.reset()
            for path in existing_run(self.out_dir):  # --overwrite: the earlier run's checkpoints go too
                path.unlink(missing_ok=True)

    # ------------------------------------------------------------------ set-up
    def _check_out_dir(self) -> Path | None:
        """The checkpoint to resume from, or None; a fresh run into a folder holding a run is refused."""
        e = self.cfg.engine
        resume = find_resume(self.out_dir, e.resume)
        # continuing this folder's run: --resume auto (with nothing to resume from, say a restart before the first
        # checkpoint, it starts afresh) or one of its own checkpoints; resuming another run's writes here afresh
        continuing = e.resume == "auto" or (resume is not None and
                                            resume.resolve().parent == (self.out_dir / "checkpoints").resolve())
        found = existing_run(self.out_dir) if not (continuing or e.overwrite) else []
        if any_rank(bool(found), self.device):  # every rank stops, or none does
            shown = ", ".join(str(p) for p in found[:3]) or "(on another node)"
            raise ConfigError(f"{self.out_dir} already holds a run ({shown}): pass --resume auto to continue it, "
                              "--overwrite to replace it, or choose another --out-dir")
        return resume

    def _build_model(self) -> nn.Module:
        e = self.cfg.engine
        model = self.task.build_model()
        synced = e.sync_bn or any(isinstance(m, SyncBatchNorm) for m in model.modules())
        if synced and self.dist.enabled:
            model = convert_sync_batchnorm(model, self.device)
        if self.micro_batch == 1 and needs_two_samples(model):
            raise ConfigError(
                "batch size 1 per process with BatchNorm in training: BN (also inside split attention) needs more "
                "than one sample. Use a larger optim.batch_size (or fewer optim.accum_steps), a norm without batch "
                "statistics (classification: model.overrides.norm_layer=frozenbn or gn; detection and "
                "segmentation: model.norm=frozenbn or gn), or synchronised BN over several processes "
                "(engine.sync_bn=true under torchrun)")
        model = model.to(self.device)
        if e.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.ema = build_ema(model, e, self.device)  # of the plain module, before compile and DDP wrap it
        if e.compile and any(getattr(m, "grad_checkpointing", ()) for m in model.modules()):
            # Dynamo turns a checkpoint with a context_fn into selective checkpointing, untested with the
            # recomputation's frozen BatchNorm statistics and in-place ReLUs
            raise ConfigError("engine.compile with model.grad_checkpointing is not supported: turn one of them off "
                              "(engine.compile=false, or model.grad_checkpointing=false)")
        self.train_module = torch.compile(model) if e.compile else model
        if self.dist.enabled:
            devices = [self.device.index] if self.device.type == "cuda" else None
            self.train_module = DistributedDataParallel(self.train_module, device_ids=devices)
        return model

    # ------------------------------------------------------------------ checkpoints
    def checkpoint(self) -> dict[str, Any]:
        return {"format": FORMAT, "task": self.task.name, "step": self.step, "total_steps": self.total_steps,
                "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler else {},
                "hooks": {type(h).__name__: h.state_dict() for h in self.hooks}, "config": self.cfg.to_dict(),
                "meta": self.task.meta(), "splitattn_version": __version__,
                **({"model_ema": self.ema.state_dict(), "ema_updates": self.ema.updates}
                   if self.ema is not None else {})}

    def save(self, name: str = LAST) -> Path:
        """Write the checkpoint ``out_dir/checkpoints/name`` (main process), atomically."""
        path = self.out_dir / "checkpoints" / name
        if self.dist.is_main:
            atomic_save(self.checkpoint(), path, hint="Free space (or choose another engine.out_dir) and resume "
                                                      "with --resume auto")
        return path

    def _restore(self, path: Path) -> None:
        ckpt = read_checkpoint_file(path)
        if checkpoint_task(ckpt) != self.task.name or ckpt.get("format") != FORMAT:
            raise CheckpointError(f"cannot resume from {path}: it is not a {self.task.name} training checkpoint of "
                                  "this splitattn version. Start afresh with --overwrite or another --out-dir")
        self.task.check_resume(ckpt["meta"], path)
        self.model.load_state_dict(ckpt["model"])
        self._restore_ema(ckpt, path)
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.scaler and ckpt["scaler"]:
            self.scaler.load_state_dict(ckpt["scaler"])
        for hook in self.hooks:
            hook.load_state_dict(ckpt["hooks"].get(type(hook).__name__, {}))
        self.step = self.start_step = int(ckpt["step"])
        if self.dist.is_main:
            where = "".join(f", {k} {v}" for k, v in self.task.position(self.step).items())
            print(f"resumed from {path} at step {self.step} of {self.total_steps}{where}", flush=True)

    def _restore_ema(self, ckpt: dict[str, Any], path: Path) -> None:
        """The EMA's weights and update count as saved (so the resumed EMA is the uninterrupted run's)."""
        if self.ema is not None and "model_ema" in ckpt:
            self.ema.load_state_dict(ckpt["model_ema"], ckpt["ema_updates"])
        elif self.dist.is_main and (self.ema is not None or "model_ema" in ckpt):
            print(f"{path} has no EMA: it starts from the next step's weights" if self.ema is not None else
                  f"{path} has an EMA but engine.ema_decay=0: it is not continued (set engine.ema_decay to keep it)",
                  flush=True)

    # ------------------------------------------------------------------ one step
    def run_step(self, batch: Any, stop: StopSignal) -> bool:
        """One optimizer step on ``batch``; True when some process asked to stop (after this step)."""
        e, o = self.cfg.engine, self.cfg.optim
        # every random draw is a pure function of the position in the run (see the module docstring)
        torch.manual_seed(derive_seed(e.seed, 1, self.dist.rank, self.step))
        self.task.before_step(self.model, self.step)
        batch = self.task.prepare(to_device(batch, self.device, e.channels_last), self.step)
        images = batch_len(batch)
        chunks = split_batch(batch, o.accum_steps)
        self.optimizer.zero_grad(set_to_none=True)
        sums, names = None, []
        for index, chunk in enumerate(chunks):
            last = index == len(chunks) - 1
            torch.manual_seed(derive_seed(e.seed, 2, self.step, self.dist.rank * len(chunks) + index))
            with self.train_module.no_sync() if self.dist.enabled and not last else nullcontext():
                with autocast(self.device, e.amp):
                    losses = self.task.losses(self.train_module, chunk)
                total = sum(losses.values())
                scaled = total * (batch_len(chunk) / images)
                (self.scaler.scale(scaled) if self.scaler else scaled).backward()
            names = list(losses) if len(losses) > 1 else []
            values = torch.stack([total.detach().float(), *(losses[n].detach().float() for n in names)])
            sums = values * batch_len(chunk) if sums is None else sums + values * batch_len(chunk)
        # the one all-reduce of the step: loss terms × images, images, a non-finite loss, a stop signal
        flags = torch.tensor([images, float(not bool(torch.isfinite(sums).all())), float(bool(stop.name))],
                             device=sums.device)
        reduced = all_reduce_sum(torch.cat([sums, flags])).cpu()
        count = reduced[len(sums)].item()
        self.record = {"loss": reduced[0].item() / count,
                       **{n: reduced[i + 1].item() / count for i, n in enumerate(names)}, "images": count}
        if reduced[len(sums) + 1] > 0:
            where = "".join(f", {k} {v}" for k, v in self.task.position(self.step).items())
            terms = {n: round(v, 4) for n, v in self.record.items() if n.startswith("loss_")}
            raise TrainingError(
                f"loss became {self.record['loss']} at step {self.step + 1}{where}{f' ({terms})' if terms else ''}: "
                f"stopped before that update, without saving; the last good checkpoint is in "
                f"{self.out_dir / 'checkpoints'}. Try a lower lr, a longer warm-up, optim.grad_clip, or bf16 "
                "instead of fp16")
        if o.grad_clip:
            if self.scaler:
                self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), o.grad_clip)
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.step += 1
        return bool(reduced[len(sums) + 2] > 0)

    # ------------------------------------------------------------------ the run
    def _call(self, stage: str) -> None:
        for hook in self.hooks:
            getattr(hook, stage)()

    def train(self) -> RunSummary:
        started = time.perf_counter()
        e, o = self.cfg.engine, self.cfg.optim
        if self.dist.is_main:
            print(f"{self.task.name}: {self.task.describe()}; {self.dist.world} process(es) × "
                  f"{self.per_process_batch} images (global batch {o.batch_size}"
                  f"{f', {o.accum_steps} accumulation steps' if o.accum_steps > 1 else ''}) on {self.device}, "
                  f"amp={e.amp}, {self.total_steps} steps", flush=True)
        try:
            with StopSignal() as stop:
                self._call("before_train")
                batches = iter(self.task.batches(self.step)) if self.step < self.max_steps else iter(())
                while self.step < self.max_steps:
                    batch = next(batches)
                    self._call("before_step")
                    halt = self.run_step(batch, stop)
                    if halt:
                        self.interrupted = True
                        self.stop_reason = (f"{stop.name or 'a stop signal (on another process)'} received: saved at "
                                            f"step {self.step}; resume with --resume auto")
                    self._call("after_step")
                    if halt:
                        break
                if not self.interrupted and self.max_steps < self.total_steps:
                    self.stop_reason = f"engine.max_steps={e.max_steps} reached (of {self.total_steps})"
                self._call("after_train")
        finally:
            for hook in self.hooks:
                hook.close()
            self.logbook.close()
        summary = RunSummary(self.task.name, str(self.out_dir), self.step, self.total_steps, self.metrics,
                             stopped=self.stop_reason, notes=self.task.notes(), main_process=self.dist.is_main)
        for hook in self.hooks:
            summary.best = getattr(hook, "best", None) or summary.best
            summary.notes += getattr(hook, "notes", [])
            if self.dist.is_main:
                summary.files.update(getattr(hook, "files", {}))
        summary.wall_s = time.perf_counter() - started
        barrier()  # no process leaves (and tears the group down) while another still writes
        return summary


"""One training loop for a single process and for DDP under ``torchrun``.

Resumable to the step: every random draw is derived from (seed, epoch, step, rank) (see
:mod:`splitattn.seeding`), checkpoints record the position inside the epoch, and a resumed run
replays exactly the losses of the uninterrupted one. SIGTERM / SIGINT finish the current step,
save and exit cleanly; a non-finite loss stops the run and keeps the last good checkpoint.
"""

from __future__ import annotations

import signal
import time
from contextlib import nullcontext, suppress
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from .. import __version__
from ..config import ConfigError, TrainConfig
from ..layers import convert_sync_batchnorm, set_drop_block_prob, uses_batch_statistics
from ..models.factory import create_model
from ..models.weights import CheckpointError
from ..seeding import derive_seed
from .checkpoint import BEST, LAST, atomic_save, find_resume, load_checkpoint
from .distributed import DistInfo, all_reduce_sum, barrier, init_distributed, shutdown_distributed
from .evaluate import autocast, evaluate
from .logbook import Logbook
from .plots import plot_curves, plot_predictions
from .recipe import (
    build_optimizer,
    drop_block_prob,
    learning_rate,
    mix_batch,
    mixup_active,
    smooth_one_hot,
    soft_cross_entropy,
)


class TrainingError(RuntimeError):
    """The run cannot go on (diverged, inconsistent resume, impossible batch); the message says why."""


@dataclass
class RunSummary:
    out_dir: str
    model: str
    epochs: int = 0
    global_step: int = 0
    val_top1: float | None = None
    val_top5: float | None = None
    best_top1: float | None = None
    wall_s: float = 0.0
    stopped: str = ""  # '' when training ran to its end; else the reason
    skipped_images: int = 0
    files: dict[str, str] = field(default_factory=dict)


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module under DDP and torch.compile wrappers."""
    model = model.module if isinstance(model, DistributedDataParallel) else model
    return getattr(model, "_orig_mod", model)


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


class Trainer:
    def __init__(self, cfg: TrainConfig, dist_info: DistInfo | None = None):
        self.cfg = cfg
        self.dist = dist_info or init_distributed(cfg.engine.device)
        self.device = self.dist.device
        self.out_dir = Path(cfg.engine.out_dir)
        e, o = cfg.engine, cfg.optim
        if e.amp == "fp16" and self.device.type != "cuda":
            raise ConfigError("engine.amp=fp16 needs a GPU (its GradScaler is CUDA-only): use engine.amp=bf16 on CPU")
        if o.batch_size % (self.dist.world * o.accum_steps):
            raise ConfigError(f"optim.batch_size={o.batch_size} is not divisible by {self.dist.world} processes "
                              f"× optim.accum_steps={o.accum_steps}")
        self.per_process_batch = o.batch_size // self.dist.world
        self.micro_batch = self.per_process_batch // o.accum_steps
        torch.manual_seed(e.seed)
        if e.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        elif self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True

        from ..data.loaders import build_data  # data needs the config module; import here keeps startup light

        self.data = build_data(cfg, self.per_process_batch, self.dist.rank, self.dist.world)
        self.model = self._build_model()
        self.optimizer = build_optimizer(self.model, cfg.base_lr(), o.momentum, o.nesterov, o.weight_decay)
        self.scaler = torch.amp.GradScaler("cuda") if e.amp == "fp16" else None
        self.steps_per_epoch = len(self.data.train)
        self.total_updates = o.epochs * self.steps_per_epoch
        self.warmup_updates = round(o.warmup_epochs * self.steps_per_epoch)
        self.logbook = Logbook(self.out_dir, enabled=self.dist.is_main, tensorboard=e.tensorboard)

    # ------------------------------------------------------------------ set-up
    def _model_kwargs(self) -> dict:
        m, o = self.cfg.model, self.cfg.optim
        kwargs = {"num_classes": len(self.data.classes), "in_chans": self.data.in_chans,
                  "zero_init_last": o.zero_init_last, **m.overrides}
        if m.drop_rate is not None:
            kwargs["drop_rate"] = m.drop_rate
        return kwargs

    def _build_model(self) -> nn.Module:
        cfg, e = self.cfg, self.cfg.engine
        model = create_model(cfg.model.name, pretrained=cfg.model.pretrained, progress=self.dist.is_main,
                             **self._model_kwargs())
        if e.sync_bn and self.dist.enabled:
            model = convert_sync_batchnorm(model, self.device)
        if self.micro_batch == 1 and any(uses_batch_statistics(m) for m in model.modules()):
            raise ConfigError(
                "batch size 1 per process with BatchNorm in training: BN (also inside split attention) needs "
                "more than one sample. Use a larger optim.batch_size (or fewer optim.accum_steps), "
                "engine.sync_bn=true with several processes, or model.overrides.norm_layer=frozenbn")
        model = model.to(self.device)
        if e.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if e.compile:
            model = torch.compile(model)
        if self.dist.enabled:
            devices = [self.device.index] if self.device.type == "cuda" else None
            model = DistributedDataParallel(model, device_ids=devices)
        return model

    def _checkpoint(self, epoch: int, step_in_epoch: int, global_step: int, best: float | None) -> dict:
        return {
            "model": unwrap(self.model).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler else {},
            "epoch": epoch, "step_in_epoch": step_in_epoch, "global_step": global_step,
            "best_top1": best, "model_name": self.cfg.model.name, "model_kwargs": self._model_kwargs(),
            "classes": list(self.data.classes), "mean": list(self.data.mean), "std": list(self.data.std),
            "image_size": self.data.image_size, "dataset": self.cfg.data.dataset,
            "train_transform": self.cfg.data.train_transform, "config": self.cfg.to_dict(),
            "splitattn_version": __version__,
        }

    def _save(self, name: str, state: dict) -> Path:
        path = self.out_dir / "checkpoints" / name
        if self.dist.is_main:
            atomic_save(state, path)
        return path

    def _resume(self) -> tuple[int, int, float | None]:
        path = find_resume(self.out_dir, self.cfg.engine.resume)
        if path is None:
            self.logbook.reset()  # a fresh run in this folder: its logs start empty
            return 0, 0, None
        ckpt = load_checkpoint(path)
        ours = (self.cfg.model.name, len(self.data.classes))
        theirs = (ckpt["model_name"], int(ckpt["model_kwargs"].get("num_classes", -1)))

        def architecture(kwargs: dict) -> dict:  # zero_init_last only matters before the first step
            return {k: v for k, v in kwargs.items() if k != "zero_init_last"}

        if ours != theirs or architecture(ckpt["model_kwargs"]) != architecture(self._model_kwargs()):
            raise CheckpointError(
                f"cannot resume from {path}: it was trained as {theirs[0]} with {theirs[1]} classes "
                f"({ckpt['model_kwargs']}), this config builds {ours[0]} with {ours[1]} classes "
                f"({self._model_kwargs()}). Use another engine.out_dir, or engine.resume='' to start afresh")
        unwrap(self.model).load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.scaler and ckpt["scaler"]:
            self.scaler.load_state_dict(ckpt["scaler"])
        if self.dist.is_main:
            print(f"resumed from {path} at epoch {ckpt['epoch']} step {ckpt['step_in_epoch']} "
                  f"(global step {ckpt['global_step']})")
        return ckpt["epoch"], ckpt["step_in_epoch"], ckpt["best_top1"]

    # ------------------------------------------------------------------ one step
    def _train_step(self, images, labels, epoch: int, global_step: int, use_mix: bool) -> torch.Tensor:
        o, e = self.cfg.optim, self.cfg.engine
        # DropBlock masks, dropout and mixup / CutMix draw from here: a pure function of the position in the run
        torch.manual_seed(derive_seed(e.seed, 1, self.dist.rank, global_step))
        lr = learning_rate(global_step + 1, self.cfg.base_lr(), self.total_updates, self.warmup_updates)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        images = images.to(self.device, non_blocking=True)
        labels = labels.to(self.device, non_blocking=True)
        targets = smooth_one_hot(labels, len(self.data.classes), o.label_smoothing)
        if use_mix:
            images, targets = mix_batch(images, targets, o.mixup, o.cutmix)
        if e.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        chunks = list(zip(images.chunk(o.accum_steps), targets.chunk(o.accum_steps)))
        loss_sum = torch.zeros((), device=self.device)
        for index, (x, t) in enumerate(chunks):
            sync = index == len(chunks) - 1 or not self.dist.enabled
            context = self.model.no_sync() if not sync else nullcontext()
            with context, autocast(self.device, e.amp):
                loss = soft_cross_entropy(self.model(x), t)
            scaled = loss * (len(x) / len(images))
            (self.scaler.scale(scaled) if self.scaler else scaled).backward()
            loss_sum += loss.detach() * len(x)
        if o.grad_clip:
            if self.scaler:
                self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), o.grad_clip)
        return loss_sum / len(images)

    def _apply_update(self) -> None:
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    # ------------------------------------------------------------------ the run
    def _train_epoch(self, epoch: int, first: int, global_step: int, stop: StopSignal,
                     summary: RunSummary) -> tuple[int, float]:
        """Steps ``first``.. of ``epoch``; returns the global step reached and the epoch's mean loss."""
        o, e = self.cfg.optim, self.cfg.engine
        set_drop_block_prob(unwrap(self.model), drop_block_prob(epoch, o.epochs, o.drop_block))
        use_mix = mixup_active(epoch, o.epochs, max(o.mixup, o.cutmix), o.mixup_off_epochs)
        self.model.train()
        bar = tqdm(total=self.steps_per_epoch, initial=first, desc=f"epoch {epoch + 1}/{o.epochs}",
                   disable=not (self.dist.is_main and e.progress), dynamic_ncols=True, leave=False)
        loss_sum, count, tick = 0.0, 0, time.perf_counter()
        for step, (images, labels, skipped) in enumerate(self.data.train.batches(epoch, first), start=first):
            loss = self._train_step(images, labels, epoch, global_step, use_mix)
            # one all-reduce per step: loss, batch size, non-finite loss, a stop signal, unreadable images
            counts = torch.tensor([len(labels), bool(stop.name), skipped], dtype=torch.float32, device=self.device)
            flags = torch.cat([(loss.float() * len(labels)).reshape(1), counts[:1],
                               (~torch.isfinite(loss)).float().reshape(1), counts[1:]])
            flags = all_reduce_sum(flags).cpu()
            if flags[2] > 0:
                value = loss.item() if not torch.isfinite(loss) else "nan"  # another rank's, if ours is fine
                raise TrainingError(
                    f"loss became {value} at epoch {epoch + 1} step {step + 1} (global step {global_step + 1}); "
                    f"stopped without saving, the last good checkpoint is in {self.out_dir / 'checkpoints'}. "
                    "Try a lower lr, optim.grad_clip, or bf16 instead of fp16")
            self._apply_update()
            global_step += 1
            loss_sum, count = loss_sum + flags[0].item(), count + int(flags[1])
            summary.skipped_images += int(flags[4])
            if self.dist.is_main and (global_step % e.log_every_steps == 0 or step + 1 == self.steps_per_epoch):
                step_loss, lr = (flags[0] / flags[1]).item(), self.optimizer.param_groups[0]["lr"]
                rate = count / max(time.perf_counter() - tick, 1e-9)
                self.logbook.step({"step": global_step, "epoch": epoch, "loss": step_loss, "lr": lr,
                                   "images_per_s": rate})
                bar.set_postfix(loss=f"{step_loss:.4f}", lr=f"{lr:.3g}", img_s=f"{rate:.0f}")
            bar.update(1)
            halt = bool(flags[3] > 0) or (e.max_steps is not None and global_step >= e.max_steps)
            if halt or (e.checkpoint_every_steps and global_step % e.checkpoint_every_steps == 0):
                position = (epoch, step + 1) if step + 1 < self.steps_per_epoch else (epoch + 1, 0)
                self._save(LAST, self._checkpoint(*position, global_step, summary.best_top1))
            if halt:
                break
        bar.close()
        return global_step, loss_sum / max(count, 1)

    def _end_epoch(self, epoch: int, global_step: int, train_loss: float, last_epoch: bool, summary: RunSummary,
                   start: float) -> dict:
        """Evaluate when due, keep the best and last checkpoints, log and plot; returns the eval metrics."""
        e = self.cfg.engine
        record = {"epoch": epoch, "step": global_step, "train_loss": train_loss,
                  "lr": self.optimizer.param_groups[0]["lr"], "time_s": time.perf_counter() - start}
        metrics: dict = {}
        whole_epoch = global_step >= (epoch + 1) * self.steps_per_epoch  # False when max_steps cut it short
        position = (epoch + 1, 0) if whole_epoch else (epoch, global_step - epoch * self.steps_per_epoch)
        if (epoch + 1) % e.eval_every_epochs == 0 or last_epoch:
            # the plain module: a compiled one would recompile for eval mode and the last, short batch
            metrics = evaluate(unwrap(self.model), self.data.val, self.device, e.amp, e.channels_last,
                               keep_examples=32 if last_epoch else 0)
            record.update({k: v for k, v in metrics.items() if k != "examples"})
            summary.val_top1, summary.val_top5 = metrics["val_top1"], metrics["val_top5"]
            if summary.best_top1 is None or metrics["val_top1"] > summary.best_top1:
                summary.best_top1 = metrics["val_top1"]
                self._save(BEST, self._checkpoint(*position, global_step, summary.best_top1))
        if whole_epoch:
            self._save(LAST, self._checkpoint(*position, global_step, summary.best_top1))
        self.logbook.epoch(record)
        if self.dist.is_main:
            plot_curves(self.out_dir)
            val = f", val top-1 {record['val_top1']:.2f}% top-5 {record['val_top5']:.2f}%" if metrics else ""
            print(f"epoch {epoch + 1}/{self.cfg.optim.epochs}: train loss {train_loss:.4f}{val} "
                  f"({record['time_s']:.0f}s)")
        summary.epochs = epoch + 1
        return metrics

    def fit(self) -> RunSummary:
        cfg, o, e = self.cfg, self.cfg.optim, self.cfg.engine
        start = time.perf_counter()
        start_epoch, start_step, best = self._resume()
        summary = RunSummary(str(self.out_dir), cfg.model.name, best_top1=best)
        global_step = start_epoch * self.steps_per_epoch + start_step
        metrics: dict = {}
        if self.dist.is_main:
            print(f"training {cfg.model.name} on {len(self.data.classes)} classes: {self.dist.world} process(es) "
                  f"× {self.per_process_batch} images (global batch {o.batch_size}, lr {cfg.base_lr():g}), "
                  f"{self.steps_per_epoch} steps/epoch × {o.epochs} epochs on {self.device}, amp={e.amp}")
        with StopSignal() as stop:
            for epoch in range(start_epoch, o.epochs):
                first = start_step if epoch == start_epoch else 0
                global_step, train_loss = self._train_epoch(epoch, first, global_step, stop, summary)
                if stop.name:
                    summary.stopped = f"{stop.name}: saved at global step {global_step}; resume with engine.resume=auto"
                    break
                capped = e.max_steps is not None and global_step >= e.max_steps
                last_epoch = epoch + 1 == o.epochs or capped
                metrics = self._end_epoch(epoch, global_step, train_loss, last_epoch, summary, start) or metrics
                if last_epoch:
                    if capped and epoch + 1 < o.epochs:
                        summary.stopped = f"engine.max_steps={e.max_steps} reached"
                    break
        if summary.val_top1 is None and not summary.stopped:  # resumed a finished run: report its accuracy
            metrics = evaluate(unwrap(self.model), self.data.val, self.device, e.amp, e.channels_last, keep_examples=32)
            summary.val_top1, summary.val_top5 = metrics["val_top1"], metrics["val_top5"]
        summary.global_step = global_step
        summary.wall_s = time.perf_counter() - start
        if self.dist.is_main:
            summary.files = {"last": str(self.out_dir / "checkpoints" / LAST),
                             "curves": str(self.out_dir / "curves.png"), "metrics": str(self.logbook.csv_path)}
            if (self.out_dir / "checkpoints" / BEST).exists():
                summary.files["best"] = str(self.out_dir / "checkpoints" / BEST)
            if metrics.get("examples") is not None:
                images, labels, probs = metrics["examples"]
                summary.files["predictions"] = str(plot_predictions(
                    images, labels, probs, self.data.classes, self.data.mean, self.data.std,
                    self.out_dir / "predictions.png"))
        self.logbook.close()
        return summary


def train(cfg: TrainConfig) -> RunSummary:
    """Train as ``cfg`` says; returns what happened (rank 0 has the file paths)."""
    try:
        summary = Trainer(cfg).fit()
        barrier()  # no rank tears the group down while another still talks to it
        return summary
    finally:
        # gloo's threads must be joined before interpreter exit, or a finished worker may abort
        # ("terminate called without an active exception") and torchrun reports the job failed
        shutdown_distributed()

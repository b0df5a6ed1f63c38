"""The hooks every run has: learning-rate schedule, model EMA, evaluation, checkpoints, logs and pictures.

They run in this order after each step: the EMA update (engine.ema_decay > 0), evaluation (so a checkpoint can
tell a new best), checkpoints, logs. Every process runs every hook (evaluation is distributed); only the main
process writes files.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ..optional import available
from .checkpoint import BEST, LAST
from .loop import HookBase, Trainer


class LRScheduleHook(HookBase):
    """Sets each group's learning rate to the task's schedule × the group's ``lr_mult`` before every step."""

    def before_step(self) -> None:
        t = self.trainer
        t.lr = t.task.learning_rate(t.step)
        for group in t.optimizer.param_groups:
            group["lr"] = t.lr * group.get("lr_mult", 1.0)


def shown_metrics(trainer: Trainer) -> tuple[str, ...]:
    """The task's metrics to print and draw, and their ``ema_`` twins when the run keeps an EMA."""
    metrics = tuple(trainer.task.metrics)
    return metrics + tuple(f"ema_{m}" for m in metrics) if trainer.ema is not None else metrics


class EMAHook(HookBase):
    """Updates the model EMA (``trainer.ema``, engine/ema.py) after every ``period``-th optimizer step; says at the
    end when the EMA set the best metric. Its weights and update count live in the checkpoints ("model_ema",
    "ema_updates"), written by the Trainer."""

    def __init__(self, period: int):
        self.period = period

    def after_step(self) -> None:
        t = self.trainer
        if t.step % self.period == 0:  # a signal-stopped step counts too: its checkpoint holds the update
            t.ema.update(t.model)

    @property
    def notes(self) -> list[str]:
        """Read by the Trainer once every hook's after_train has run (the final evaluation may set the best)."""
        best = next((h.best for h in self.trainer.hooks if isinstance(h, CheckpointHook) and h.best), None)
        if not best or best.get("weights") != "ema":
            return []
        return [f"best.pth: the EMA weights set the best {best['metric']} ({best['value']:.4g} at step "
                f"{best['step']}): use them with --weights ema (eval, predict, export)"]


class EvalHook(HookBase):
    """Evaluates every ``period`` steps and at the end (unless a signal stopped the run); with a model EMA, the EMA
    too (its metrics named ``ema_<metric>``)."""

    def __init__(self, period: int):
        self.period = period

    def _evaluate_ema(self, final: bool) -> dict[str, Any]:
        t = self.trainer
        t.evaluating = "ema"
        try:
            with t.ema.placed(t.device) as module:
                metrics = t.task.evaluate(module, t.step, final)
        finally:
            t.evaluating = "model"
        return {f"ema_{k}": v for k, v in metrics.items() if isinstance(v, (int, float))}

    def _evaluate(self, final: bool) -> None:
        t = self.trainer
        metrics = t.task.evaluate(t.model, t.step, final)
        t.train_module.train()
        if t.ema is not None:
            metrics = {**metrics, **self._evaluate_ema(final)}
        t.metrics, t.metrics_step = metrics, t.step
        scalars = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
        if not scalars or not t.dist.is_main:
            return
        position = t.task.position(t.step)
        t.logbook.evaluation({"step": t.step, **position, "train_loss": t.record.get("loss"), **scalars})
        shown = ", ".join(f"{k} {scalars[k]:.4g}" for k in shown_metrics(t) if k in scalars)
        where = "".join(f", {k} {v}" for k, v in position.items())
        loss = f", train loss {t.record['loss']:.4f}" if "loss" in t.record else ""
        print(f"step {t.step}/{t.total_steps}{where}: {shown}{loss}", flush=True)

    def after_step(self) -> None:
        t = self.trainer
        if t.step % self.period == 0 and t.step < t.max_steps and not t.interrupted:
            self._evaluate(final=False)

    def after_train(self) -> None:
        t = self.trainer
        if not t.interrupted and t.metrics_step != t.step:
            self._evaluate(final=True)


class CheckpointHook(HookBase):
    """``last.pth`` every ``period`` steps, when a signal stops the run and at the end; ``best.pth`` whenever the
    task's ``best_metric`` reaches a new high, of the model or of its EMA (``best["weights"]`` says which)."""

    def __init__(self, period: int, metric: str | None):
        self.period, self.metric = period, metric
        self.best: dict[str, Any] | None = None
        self.saved_step = self.checked_step = -1
        self.files: dict[str, str] = {}

    def _keep_best(self) -> None:
        t = self.trainer
        if not self.metric or t.metrics_step != t.step or self.checked_step == t.step:
            return
        self.checked_step = t.step
        scored = [(value, weights) for value, weights in ((t.metrics.get(self.metric), "model"),
                                                          (t.metrics.get(f"ema_{self.metric}"), "ema"))
                  if isinstance(value, (int, float))]
        if not scored:
            return
        value, weights = max(scored, key=lambda pair: pair[0])  # a tie goes to the model
        if self.best is None or value > self.best["value"]:
            self.best = {"metric": self.metric, "value": value, "step": t.step,
                         **({"weights": weights} if t.ema is not None else {})}
            self.files["best"] = str(t.save(BEST))

    def _save_last(self) -> None:
        self.files["last"] = str(self.trainer.save(LAST))
        self.saved_step = self.trainer.step

    def after_step(self) -> None:
        t = self.trainer
        self._keep_best()
        # the last step's checkpoint waits for after_train: the final evaluation runs first and may change the
        # model (precise BN recomputes BatchNorm statistics)
        if (t.step % self.period == 0 and t.step < t.max_steps) or t.interrupted:
            self._save_last()

    def after_train(self) -> None:
        t = self.trainer
        self._keep_best()
        last = t.out_dir / "checkpoints" / LAST
        if self.saved_step != t.step and (t.step > t.start_step or not last.is_file()):
            self._save_last()
        self.files.setdefault("last", str(last))
        if (t.out_dir / "checkpoints" / BEST).is_file():
            self.files.setdefault("best", str(t.out_dir / "checkpoints" / BEST))

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = state.get("best")


class LoggingHook(HookBase):
    """A tqdm bar (loss, lr, images/s), a step record every ``period`` steps (JSONL, TensorBoard), and at the
    end curves.png and the task's pictures."""

    def __init__(self, period: int, progress: bool):
        self.period, self.progress = period, progress
        self.files: dict[str, str] = {}
        self.notes: list[str] = []

    def before_train(self) -> None:
        t = self.trainer
        self.bar = tqdm(total=t.max_steps, initial=t.step, desc=t.task.name, dynamic_ncols=True,
                        disable=not (self.progress and t.dist.is_main))
        self.tick, self.images = time.perf_counter(), 0.0

    def after_step(self) -> None:
        t = self.trainer
        self.images += t.record["images"]
        self.bar.update(1)
        if t.step % self.period and t.step != t.max_steps and not t.interrupted:
            return
        rate = self.images / max(time.perf_counter() - self.tick, 1e-9)
        self.tick, self.images = time.perf_counter(), 0.0
        losses = {k: v for k, v in t.record.items() if k != "images"}
        t.logbook.step({"step": t.step, **t.task.position(t.step), "lr": t.lr, **losses, "images_per_s": rate})
        self.bar.set_postfix(loss=f"{losses['loss']:.4f}", lr=f"{t.lr:.3g}", img_s=f"{rate:.0f}")

    def after_train(self) -> None:
        t = self.trainer
        self.bar.close()
        if not t.dist.is_main:
            return
        self.files.update(log=str(t.logbook.steps_path))
        if t.logbook.csv_path.is_file():
            self.files["metrics"] = str(t.logbook.csv_path)
        if available("matplotlib"):
            from .plots import plot_curves

            self.files["curves"] = str(plot_curves(t.out_dir, shown_metrics(t)))
            self.files.update(t.task.finish(t.model, Path(t.out_dir), t.metrics))
        else:
            self.notes.append("curves.png and prediction pictures not written: pip install 'splitattn[plots]'")

    def close(self) -> None:
        if hasattr(self, "bar"):
            self.bar.close()


def default_hooks(trainer: Trainer) -> list[HookBase]:
    e = trainer.cfg.engine
    period = trainer.task.period()
    ema = [EMAHook(e.ema_every_steps)] if trainer.ema is not None else []
    return [LRScheduleHook(), *ema, EvalHook(e.eval_every_steps or period),
            CheckpointHook(e.checkpoint_every_steps or period, trainer.task.best_metric),
            LoggingHook(e.log_every_steps, e.progress)]

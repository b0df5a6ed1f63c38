"""Image classification on the engine: the released weights' recipe, epochs expressed as steps.

Step ``s`` is step ``s mod E`` of epoch ``s div E`` (E steps per epoch); the learning rate is set per
step (warm-up, cosine), the DropBlock probability and mixup's switch-off per epoch, and evaluation and
checkpoints come once per epoch unless the engine config says otherwise.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from torch import nn

from ..engine.distributed import DistInfo, gather_objects, shutdown_distributed
from ..engine.loop import RunSummary, Task, Trainer
from ..layers import set_drop_block_prob
from ..models.factory import create_model
from ..models.resnest import set_grad_checkpointing
from ..models.weights import CheckpointError
from .config import ClassificationConfig
from .data import DataBundle, build_data
from .evaluate import evaluate
from .folder import DatasetError
from .recipe import drop_block_prob, learning_rate, mix_batch, mixup_active, smooth_one_hot, soft_cross_entropy


class ClassificationTask(Task):
    name = "classification"
    metrics = ("val_top1", "val_top5")
    best_metric = "val_top1"

    def __init__(self, cfg: ClassificationConfig, data: DataBundle | None = None):
        """``data``: batches of your own (a :class:`DataBundle`); None builds them from ``cfg.data``."""
        super().__init__(cfg)
        self.data = data
        self.unreadable: set[str] = set()
        self._drop_block_epoch = -1

    def setup(self, trainer: Trainer) -> None:
        self.trainer = trainer
        if self.data is None:
            self.data = build_data(self.cfg, trainer.per_process_batch, trainer.dist.rank, trainer.dist.world)
        self.steps_per_epoch = len(self.data.train)

    def model_kwargs(self) -> dict[str, Any]:
        m, o = self.cfg.model, self.cfg.optim
        kwargs = {"num_classes": len(self.data.classes), "in_chans": self.data.in_chans,
                  "zero_init_last": o.zero_init_last, **m.overrides}
        if m.drop_rate is not None:
            kwargs["drop_rate"] = m.drop_rate
        return kwargs

    def build_model(self) -> nn.Module:
        m = self.cfg.model
        model = create_model(m.name, pretrained=m.pretrained, progress=self.trainer.dist.is_main,
                             **self.model_kwargs())
        set_grad_checkpointing(model, m.grad_checkpointing)
        return model

    # ------------------------------------------------------------------ schedule
    def total_steps(self) -> int:
        return self.cfg.optim.epochs * self.steps_per_epoch

    def period(self) -> int:
        return self.steps_per_epoch

    def learning_rate(self, step: int) -> float:
        o = self.cfg.optim
        return learning_rate(step + 1, o.base_lr(), self.total_steps(), round(o.warmup_epochs * self.steps_per_epoch))

    def position(self, step: int) -> dict[str, Any]:
        return {"epoch": round(step / self.steps_per_epoch, 4)}

    def epoch_of(self, step: int) -> int:
        return step // self.steps_per_epoch

    # ------------------------------------------------------------------ steps
    def batches(self, start_step: int) -> Iterator[Any]:
        first_epoch, first_step = divmod(start_step, self.steps_per_epoch)
        for epoch in range(first_epoch, self.cfg.optim.epochs):
            for images, labels, skipped in self.data.train.batches(epoch, first_step if epoch == first_epoch else 0):
                self.unreadable.update(skipped)
                if len(labels) == 0:
                    raise DatasetError(f"every image of a training batch was unreadable (e.g. {skipped[:3]}): "
                                       "check the data folder")
                yield images, labels

    def before_step(self, model: nn.Module, step: int) -> None:
        epoch = self.epoch_of(step)
        if epoch != self._drop_block_epoch:
            o = self.cfg.optim
            set_drop_block_prob(model, drop_block_prob(epoch, o.epochs, o.drop_block))
            self._drop_block_epoch = epoch

    def prepare(self, batch: Any, step: int) -> Any:
        images, labels = batch
        o = self.cfg.optim
        targets = smooth_one_hot(labels, len(self.data.classes), o.label_smoothing)
        if mixup_active(self.epoch_of(step), o.epochs, max(o.mixup, o.cutmix), o.mixup_off_epochs):
            images, targets = mix_batch(images, targets, o.mixup, o.cutmix)
        return images, targets

    def losses(self, model: nn.Module, batch: Any) -> dict:
        images, targets = batch
        return {"loss": soft_cross_entropy(model(images), targets)}

    # ------------------------------------------------------------------ evaluation and the end
    def evaluate(self, model: nn.Module, step: int, final: bool) -> dict[str, float]:
        e = self.cfg.engine
        # the plain module: a compiled one would recompile for eval mode and the last, short batch
        return evaluate(model, self.data.val, self.trainer.device, e.amp, e.channels_last,
                        keep_examples=32 if final else 0)

    def meta(self) -> dict[str, Any]:
        d = self.data
        return {"model_name": self.cfg.model.name, "model_kwargs": self.model_kwargs(), "classes": list(d.classes),
                "mean": list(d.mean), "std": list(d.std), "image_size": d.image_size,
                "dataset": self.cfg.data.dataset, "train_transform": self.cfg.data.train_transform}

    def check_resume(self, meta: dict[str, Any], path: Path) -> None:
        def architecture(kwargs: dict) -> dict:  # zero_init_last only matters before the first step
            return {k: v for k, v in kwargs.items() if k != "zero_init_last"}

        mine = self.meta()
        if (meta["model_name"], architecture(meta["model_kwargs"])) != (mine["model_name"],
                                                                         architecture(mine["model_kwargs"])):
            raise CheckpointError(
                f"cannot resume from {path}: it was trained as {meta['model_name']} ({meta['model_kwargs']}), this "
                f"config builds {mine['model_name']} ({mine['model_kwargs']}). Use another engine.out_dir, or "
                "start afresh with --overwrite")

    def describe(self) -> str:
        o = self.cfg.optim
        return (f"{self.cfg.model.name} on {len(self.data.classes)} classes, lr {o.base_lr():g}, "
                f"{self.steps_per_epoch} steps/epoch × {o.epochs} epochs")

    def finish(self, model: nn.Module, out_dir: Path, metrics: dict[str, Any]) -> dict[str, str]:
        if metrics.get("examples") is None:
            return {}
        from .visualize import plot_predictions

        images, labels, probs = metrics["examples"]
        return {"predictions": str(plot_predictions(images, labels, probs, self.data.classes, self.data.mean,
                                                    self.data.std, out_dir / "predictions.png"))}

    def notes(self) -> list[str]:
        unreadable = sorted(set().union(*gather_objects(self.unreadable)))  # the files, not their loads
        if not unreadable:
            return []
        shown = ", ".join(unreadable[:5]) + (", …" if len(unreadable) > 5 else "")
        return [f"skipped {len(unreadable)} unreadable training image file(s): {shown} "
                "(data.strict=true makes them fatal)"]


def train_classifier(cfg: ClassificationConfig, dist_info: DistInfo | None = None) -> RunSummary:
    """Train as ``cfg`` says; returns what happened (the main process has the file paths)."""
    try:
        return Trainer(ClassificationTask(cfg), dist_info).train()
    finally:
        # gloo's threads must be joined before interpreter exit, or a finished worker may abort
        # ("terminate called without an active exception") and torchrun reports the job failed
        shutdown_distributed()

"""Model EMA (engine/ema.py): the update against its definition worked out by hand and against timm's ModelEmaV3,
every-N updates in training, exact resume, what checkpoints hold, evaluation and best.pth, ``--weights ema``
in eval / predict (and the detection / segmentation loaders), and the config's checks."""

from __future__ import annotations

import json
import re

import pytest
import torch
from torch import nn

from splitattn.engine import ConfigError, HookBase, ModelEma, Trainer, build_config
from splitattn.engine.checkpoint import checkpoint_weights
from splitattn.engine.precise_bn import update_bn_stats
from splitattn.models.weights import CheckpointError
from tests.ddp_stop_worker import ToyConfig, ToyTask
from tests.test_data import _require_fashion_mnist

CONFIG = "configs/fashion_mnist/resnest_cpu.yaml"
# tests/test_train.py's tiny run, smaller: 4 steps per epoch, 2 epochs, each evaluated on 256 test images
TINY = ["engine.device=cpu", "engine.compile=false", "model.overrides.avd_first=false",
        "model.overrides.base_planes=8", "model.overrides.stem_width=8", "data.train_subset=256",
        "data.val_subset=256", "engine.eval_every_steps=0",
        "optim.batch_size=64", "optim.epochs=2", "optim.warmup_epochs=1", "optim.mixup=0", "optim.drop_block=0",
        "engine.amp=none", "engine.channels_last=false", "engine.deterministic=true", "engine.log_every_steps=1",
        "engine.progress=false", "engine.tensorboard=false", "engine.ema_decay=0.5", "engine.ema_warmup=true",
        "engine.ema_every_steps=2"]


def _fill(model: nn.Module, value: float) -> None:
    """Every floating-point parameter and buffer set to ``value``; num_batches_tracked to ``int(value)``."""
    with torch.no_grad():
        for tensor in model.state_dict().values():
            tensor.fill_(value if tensor.is_floating_point() else int(value))


def _net() -> nn.Module:
    return nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3))


# ----------------------------------------------------------------------------- the definition
def test_without_warmup_the_first_update_copies_then_each_mixes_by_the_decay():
    model = _net()
    ema = ModelEma(model, decay=0.5)
    for value, expected in ((1.0, 1.0), (2.0, 1.5), (4.0, 2.75)):  # β = 0, 0.5, 0.5
        _fill(model, value)
        ema.update(model)
        for name, tensor in ema.state_dict().items():
            if tensor.is_floating_point():  # weights and BN running statistics alike
                assert torch.equal(tensor, torch.full_like(tensor, expected)), name
    assert ema.updates == 3 and ema.state_dict()["1.num_batches_tracked"].item() == 4  # copied, not averaged
    assert not ema.module.training and not any(p.requires_grad for p in ema.module.parameters())


def test_tied_weights_are_averaged_once():
    model = nn.Sequential(nn.Linear(2, 2, bias=False), nn.Linear(2, 2, bias=False))
    model[1].weight = model[0].weight
    ema = ModelEma(model, decay=0.5)
    for value in (1.0, 2.0):
        _fill(model, value)
        ema.update(model)
    assert ema.module[1].weight is ema.module[0].weight
    assert torch.equal(ema.module[0].weight, torch.full((2, 2), 1.5))  # not 1.75 from a second lerp


def test_warmup_with_gamma_1_power_1_is_the_running_mean_until_the_decay_caps_it():
    # β_k = min(0.75, 1 − 1/k): 0, 1/2, 2/3, 3/4, 3/4. The first three updates give the mean of 1..k, then
    # 0.75·2 + 0.25·4 = 2.5 and 0.75·2.5 + 0.25·5 = 3.125.
    model = _net()
    ema = ModelEma(model, decay=0.75, warmup=True, gamma=1.0, power=1.0)
    assert [ema.decay_at(k) for k in (1, 2, 3, 4, 5)] == pytest.approx([0, 1 / 2, 2 / 3, 3 / 4, 3 / 4])
    for k, expected in zip(range(1, 6), (1.0, 1.5, 2.0, 2.5, 3.125)):
        _fill(model, float(k))
        ema.update(model)
        weight = ema.state_dict()["0.weight"]
        torch.testing.assert_close(weight, torch.full_like(weight, expected), rtol=1e-6, atol=1e-6)


def test_the_update_is_timms_model_ema_v3():
    """timm's ModelEmaV3 with use_warmup, called as timm's train.py calls it (step = updates so far, from 1)."""
    from timm.utils.model_ema import ModelEmaV3

    torch.manual_seed(0)
    model = _net()
    ours = ModelEma(model, decay=0.9, warmup=True, gamma=2.0, power=2 / 3)
    theirs = ModelEmaV3(model, decay=0.9, use_warmup=True, warmup_gamma=2.0, warmup_power=2 / 3)
    for step in range(1, 41):
        with torch.no_grad():
            for tensor in model.state_dict().values():
                tensor.copy_(torch.randn(tensor.shape) if tensor.is_floating_point() else tensor + 1)
        ours.update(model)
        theirs.update(model, step=step)
        assert ours.decay_at(step) == theirs.get_decay(step)
    for name, tensor in theirs.module.state_dict().items():
        torch.testing.assert_close(ours.state_dict()[name], tensor, rtol=1e-6, atol=1e-7, msg=name)


class Snapshots(HookBase):
    """The plain model's weights after every step (run after the EMA hook: the weights the EMA saw)."""

    def __init__(self):
        self.weights = {}

    def after_step(self):
        self.weights[self.trainer.step] = {k: v.clone() for k, v in self.trainer.model.state_dict().items()}


def _toy_cfg(tmp_path, **engine) -> ToyConfig:
    cfg = ToyConfig()
    cfg.engine.out_dir, cfg.engine.device, cfg.engine.progress, cfg.engine.tensorboard = \
        str(tmp_path), "cpu", False, False
    for key, value in engine.items():
        setattr(cfg.engine, key, value)
    return cfg


def test_every_n_steps_in_training_is_the_closed_form_of_the_updates(tmp_path):
    """12 steps, an update after steps 3, 6, 9, 12 (k = 1..4) with timm's warm-up at γ = 1, p = 1: β_k = 0, 1/2,
    2/3, then the decay 0.7 (< 3/4). EMA = ((θ3 + θ6 + θ9)/3)·0.7 + θ12·0.3."""
    snapshots = Snapshots()
    cfg = _toy_cfg(tmp_path, ema_decay=0.7, ema_warmup=True, ema_warmup_gamma=1.0, ema_warmup_power=1.0,
                   ema_every_steps=3)
    trainer = Trainer(ToyTask(cfg, "none"), hooks=[snapshots])
    trainer.train()
    assert trainer.ema.updates == 4
    theta = {s: snapshots.weights[s] for s in (3, 6, 9, 12)}
    for name, value in trainer.ema.state_dict().items():
        mean = (theta[3][name].double() + theta[6][name].double() + theta[9][name].double()) / 3
        expected = 0.7 * mean + 0.3 * theta[12][name].double()
        torch.testing.assert_close(value.double(), expected, rtol=1e-6, atol=1e-7, msg=name)
    saved = torch.load(tmp_path / "checkpoints" / "last.pth", weights_only=True)
    assert saved["ema_updates"] == 4
    assert all(torch.equal(saved["model_ema"][k], v) for k, v in trainer.ema.state_dict().items())


def test_without_ema_checkpoints_have_no_ema_and_asking_for_it_names_the_fix(tmp_path):
    Trainer(ToyTask(_toy_cfg(tmp_path, max_steps=2), "none")).train()
    saved = torch.load(tmp_path / "checkpoints" / "last.pth", weights_only=True)
    assert "model_ema" not in saved and "ema_updates" not in saved
    assert checkpoint_weights(saved, "model") is saved["model"]
    with pytest.raises(CheckpointError, match=r"holds no EMA weights .*use --weights model, or train with "
                                              r"engine\.ema_decay"):
        checkpoint_weights(saved, "ema", "last.pth")


# ----------------------------------------------------------------------------- evaluation side effects
class BNTask(ToyTask):
    """The toy regression with BatchNorm, evaluated as detection is with optim.precise_bn_iters > 0: precise BN on
    the module it is given (changing its statistics), then a metric; records what each evaluation saw."""

    best_metric = "score"

    def __init__(self, cfg):
        super().__init__(cfg, "none")
        self.seen = []

    def build_model(self) -> nn.Module:
        return nn.Sequential(nn.Linear(4, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 1))

    def evaluate(self, model, step, final):
        batches = [torch.randn(8, 4, generator=torch.Generator().manual_seed(i)) for i in range(3)]
        update_bn_stats(model.train(), batches, 3, progress=False)
        model.eval()
        with torch.no_grad():
            x = torch.randn(32, 4, generator=torch.Generator().manual_seed(99))
            score = -nn.functional.mse_loss(model(x), x.sum(1, keepdim=True)).item()
        self.seen.append((model, step, {k: v.clone() for k, v in model.state_dict().items()}))
        return {"score": score}


def test_evaluating_the_ema_leaves_the_model_alone_and_keeps_the_ema_it_evaluated(tmp_path):
    cfg = _toy_cfg(tmp_path, ema_decay=0.8, eval_every_steps=4, checkpoint_every_steps=4)
    task = BNTask(cfg)
    trainer = Trainer(task)
    summary = trainer.train()
    assert [(m is trainer.model, m is trainer.ema.module, s) for m, s, _ in task.seen] == \
        [(True, False, 4), (False, True, 4), (True, False, 8), (False, True, 8), (True, False, 12), (False, True, 12)]
    model_after, ema_after = task.seen[-2][2], task.seen[-1][2]
    for name, value in trainer.model.state_dict().items():  # the EMA's precise BN did not touch the model
        assert torch.equal(value, model_after[name]), name
    for name, value in trainer.ema.state_dict().items():  # the EMA keeps the statistics it was evaluated with
        assert torch.equal(value, ema_after[name]), name
    assert not trainer.ema.module.training and trainer.model.training  # the EMA back in eval, the model in train
    saved = torch.load(tmp_path / "checkpoints" / "last.pth", weights_only=True)
    assert all(torch.equal(saved["model_ema"][k], v) for k, v in ema_after.items())
    assert all(torch.equal(saved["model"][k], v) for k, v in model_after.items())
    evals = [json.loads(line) for line in (tmp_path / "evals.jsonl").read_text().splitlines()]
    assert [sorted(k for k in e if "score" in k) for e in evals] == [["ema_score", "score"]] * 3
    best = max(((e[k], e["step"], k) for e in evals for k in ("score", "ema_score")), key=lambda t: t[0])
    assert summary.best == {"metric": "score", "value": best[0], "step": best[1],
                            "weights": "ema" if best[2] == "ema_score" else "model"}
    kept = torch.load(tmp_path / "checkpoints" / "best.pth", weights_only=True)
    assert kept["step"] == best[1] and kept["hooks"]["CheckpointHook"]["best"] == summary.best


def test_detection_precise_bn_measures_each_of_model_and_ema_at_its_own_weights(tmp_path, capsys):
    """`detect train` with optim.precise_bn_iters: the final evaluation runs precise BN on the model, then on the EMA.
    Each checkpointed set of BN statistics is what update_bn_stats computes at that set's weights, on the forwards
    training would run next (tests/test_detection_precise_bn.py); each BN saw its 2 batches once."""
    from benchmarks.scenes.generator import make_scenes
    from splitattn.cli import main
    from splitattn.detection.config import load_detect_config
    from splitattn.detection.data import CocoDetection, collate_detection
    from splitattn.detection.task import load_detector_checkpoint
    from splitattn.engine.loop import to_device
    from splitattn.engine.sampler import iteration_batches
    from splitattn.seeding import derive_seed
    from tests.test_detection import _tiny_detector_run

    make_scenes(tmp_path / "scenes", num_train=8, num_val=4, size=96, object_size=(24, 48), seed=3, progress=False)
    run = [*_tiny_detector_run(tmp_path / "scenes", tmp_path / "run"), "data.val_annotations=", "optim.batch_size=2",
           "optim.max_iters=2", "optim.steps=[2]", "optim.warmup_iters=1", "optim.precise_bn_iters=2",
           "engine.tensorboard=false", "engine.ema_decay=0.5"]
    assert main(["detect", "train", *run]) == 0
    assert capsys.readouterr().out.count("step 2/2: precise BN statistics from 2 training batches") == 2
    cfg = load_detect_config(None, run)
    train_set = CocoDetection(cfg.data.train_images, cfg.data.train_annotations, train=True, masks=True,
                              flip_prob=cfg.data.flip_prob)

    def micro_batches():
        for step, batch in enumerate(iteration_batches(train_set, collate_detection, 2, 4, 2, cfg.engine.seed, 0, 1),
                                     start=2):
            yield derive_seed(cfg.engine.seed, 2, step, 0), to_device(batch, torch.device("cpu"))

    def forward(module, item):
        torch.manual_seed(item[0])
        return module(*item[1])

    path = tmp_path / "run" / "checkpoints" / "last.pth"
    saved = torch.load(path, weights_only=True)
    assert saved["ema_updates"] == 2
    for weights, key in (("model", "model"), ("ema", "model_ema")):
        model = load_detector_checkpoint(path, weights=weights)[0].train()
        update_bn_stats(model, micro_batches(), 2, forward=forward, progress=False)
        stats = [k for k in saved[key] if k.endswith(("running_mean", "running_var"))]
        assert len(stats) > 60
        for name in stats:
            torch.testing.assert_close(saved[key][name], model.state_dict()[name], rtol=0, atol=0, msg=name)
        counts = {v.item() for k, v in saved[key].items() if k.endswith("num_batches_tracked")}
        assert counts == {2 + 2}, (key, counts)  # 2 steps, then precise BN's 2 batches, once
    assert any(not torch.equal(saved["model"][k], saved["model_ema"][k]) for k in stats)


# ----------------------------------------------------------------------------- classification: resume and the CLI
def _classifier_run(out, *extra):
    from splitattn.classification.config import load_classification_config
    from splitattn.classification.task import train_classifier

    return train_classifier(load_classification_config(CONFIG, [*TINY, f"engine.out_dir={out}", *extra]))


@pytest.fixture(scope="module")
def classifier_run(tmp_path_factory):
    _require_fashion_mnist()
    out = tmp_path_factory.mktemp("ema_uninterrupted")
    return out, _classifier_run(out)


def test_a_resumed_run_has_the_uninterrupted_runs_ema_bit_for_bit(tmp_path, classifier_run):
    """Stopped after step 5 (EMA updates after steps 2 and 4 only), resumed to step 8: the same EMA tensors and
    update count as the run that never stopped."""
    whole, _ = classifier_run
    out = tmp_path / "resumed"
    _classifier_run(out, "engine.max_steps=5")
    stopped = torch.load(out / "checkpoints" / "last.pth", weights_only=True)
    assert (stopped["step"], stopped["ema_updates"]) == (5, 2)
    _classifier_run(out, "engine.resume=auto")
    expected = torch.load(whole / "checkpoints" / "last.pth", weights_only=True)
    got = torch.load(out / "checkpoints" / "last.pth", weights_only=True)
    assert (got["step"], got["ema_updates"]) == (expected["step"], expected["ema_updates"]) == (8, 4)
    assert got["model_ema"].keys() == expected["model_ema"].keys()
    for name, value in expected["model_ema"].items():
        assert torch.equal(got["model_ema"][name], value), name
    assert any(not torch.equal(expected["model"][k], v) for k, v in expected["model_ema"].items())


def test_checkpoints_and_logs_hold_the_ema_and_which_weights_were_best(classifier_run):
    out, summary = classifier_run
    evals = [json.loads(line) for line in (out / "evals.jsonl").read_text().splitlines()]
    assert [e["step"] for e in evals] == [4, 8] and all("ema_val_top1" in e and "ema_val_loss" in e for e in evals)
    assert summary.metrics["ema_val_top1"] == evals[-1]["ema_val_top1"]
    assert summary.best["weights"] in ("model", "ema") and summary.best["metric"] == "val_top1"
    top = max((e[k], k) for e in evals for k in ("val_top1", "ema_val_top1"))
    assert summary.best["value"] == top[0]
    best = torch.load(out / "checkpoints" / "best.pth", weights_only=True)
    assert best["hooks"]["CheckpointHook"]["best"] == summary.best
    assert {"model_ema", "ema_updates"} <= best.keys()
    assert "ema_val_top1" in (out / "metrics.csv").read_text().splitlines()[0]


def _image_folder(root, per_class: int = 2):
    """``root/val/<label>/*.png``: ``per_class`` Fashion-MNIST test images of each class."""
    from PIL import Image

    from splitattn.classification.fashion_mnist import load_fashion_mnist

    images, labels = load_fashion_mnist(None, "test")
    for label in range(10):
        (root / "val" / str(label)).mkdir(parents=True)
        for i in (labels == label).nonzero()[:per_class, 0].tolist():
            Image.fromarray(images[i].numpy()).save(root / "val" / str(label) / f"{i}.png")
    return sorted((root / "val").glob("*/*.png"))


def _expected_loss(saved, weights: str, paths) -> float:
    """The mean cross-entropy of the checkpoint's ``weights`` tensors on ``paths``, computed here."""
    from splitattn.classification.inference import checkpoint_transform
    from splitattn.data.images import open_image
    from splitattn.models.factory import create_model

    model = create_model(saved["meta"]["model_name"], **saved["meta"]["model_kwargs"])
    model.load_state_dict(saved[weights])
    transform = checkpoint_transform(saved["meta"])
    images = torch.stack([transform(open_image(p)) for p in paths])
    labels = torch.tensor([int(p.parent.name) for p in paths])
    with torch.no_grad():
        return nn.functional.cross_entropy(model.eval()(images), labels).item()


def test_eval_with_weights_ema_evaluates_the_ema_tensors(classifier_run, tmp_path, capsys):
    from splitattn.classification.inference import load_predictor
    from splitattn.cli import main

    out, _ = classifier_run
    last = str(out / "checkpoints" / "last.pth")
    saved = torch.load(last, weights_only=True)
    predictor = load_predictor(last, weights="ema")
    for name, value in predictor.model.state_dict().items():
        assert torch.equal(value, saved["model_ema"][name]), name
    paths = _image_folder(tmp_path)
    for weights, key in (("ema", "model_ema"), ("model", "model")):
        assert main(["eval", "--checkpoint", last, "--weights", weights, "--device", "cpu", "--dataset",
                     "imagefolder", "--data", str(tmp_path), "--workers", "0"]) == 0
        printed = capsys.readouterr().out
        assert ("(EMA weights)" in printed) == (weights == "ema")
        loss = float(re.search(r"loss ([\d.]+) on 20 images", printed).group(1))
        assert loss == pytest.approx(_expected_loss(saved, key, paths), abs=2e-4), (weights, printed)
    assert abs(_expected_loss(saved, "model", paths) - _expected_loss(saved, "model_ema", paths)) > 1e-3


def test_predict_with_weights_ema_uses_the_ema_tensors(classifier_run, capsys):
    from splitattn.classification.inference import checkpoint_transform
    from splitattn.cli import main
    from splitattn.data.images import open_image
    from splitattn.models.factory import create_model
    from tests.conftest import foolbox_photos

    out, _ = classifier_run
    last = out / "checkpoints" / "last.pth"
    saved = torch.load(last, weights_only=True)
    photo = next(p for p in foolbox_photos()[0].parent.glob("fashionMNIST_*_9.png"))
    assert main(["predict", "--checkpoint", str(last), "--weights", "ema", "--device", "cpu", str(photo)]) == 0
    rows = capsys.readouterr().out.strip().splitlines()[1:]
    model = create_model(saved["meta"]["model_name"], **saved["meta"]["model_kwargs"])
    model.load_state_dict(saved["model_ema"])
    with torch.no_grad():
        probs = model.eval()(checkpoint_transform(saved["meta"])(open_image(photo)).unsqueeze(0)).softmax(-1)[0]
    top = probs.topk(5)
    assert [f"{p:7.2%}  {i:4d}" for p, i in zip(top.values.tolist(), top.indices.tolist())] == \
        [row[2:15] for row in rows]


def test_weights_ema_of_a_checkpoint_without_ema_is_a_one_line_error(classifier_run, tmp_path, capsys):
    from splitattn.cli import main

    out, _ = classifier_run
    saved = torch.load(out / "checkpoints" / "last.pth", weights_only=True)
    del saved["model_ema"], saved["ema_updates"]
    torch.save(saved, tmp_path / "no_ema.pth")
    assert main(["predict", "--checkpoint", str(tmp_path / "no_ema.pth"), "--weights", "ema", "x.png"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "holds no EMA weights" in error and "--weights model" in error
    assert main(["eval", "--model", "resnest14", "--weights", "ema"]) == 2
    assert "--weights ema needs a training checkpoint" in capsys.readouterr().err


def test_every_verb_that_loads_a_checkpoint_takes_weights():
    from splitattn.cli import build_parser

    parser = build_parser()
    for argv in (["eval", "--checkpoint", "c.pth"], ["predict", "--checkpoint", "c.pth", "x.png"],
                 ["export", "c.pth", "--format", "onnx"], ["detect", "eval", "--checkpoint", "c.pth"],
                 ["detect", "predict", "--checkpoint", "c.pth", "x.png"], ["segment", "eval", "--checkpoint", "c.pth"],
                 ["segment", "predict", "--checkpoint", "c.pth", "x.png"],
                 ["explain", "x.png", "--checkpoint", "c.pth"]):
        assert parser.parse_args(argv).weights == "model"
        assert parser.parse_args([*argv, "--weights", "ema"]).weights == "ema"


class _Tiny(nn.Module):
    def __init__(self, **_):
        super().__init__()
        self.head = nn.Linear(2, 2)


@pytest.mark.parametrize("task", ["detection", "segmentation"])
def test_detection_and_segmentation_loaders_take_the_ema_weights(task, tmp_path, monkeypatch):
    """Their loaders go through checkpoint_weights too (the network replaced by a tiny one: only the routing is
    under test)."""
    if task == "detection":
        from splitattn.detection import task as module
        from splitattn.detection.config import DetectConfig as Config

        monkeypatch.setattr(module, "create_detector", _Tiny)
        load = module.load_detector_checkpoint
    else:
        from splitattn.segmentation import task as module
        from splitattn.segmentation.config import SegmentConfig as Config

        monkeypatch.setattr(module, "create_segmenter", _Tiny)
        load = module.load_segmenter_checkpoint
    model, ema = _Tiny(), _Tiny()
    path = tmp_path / "ckpt.pth"
    torch.save({"format": 2, "task": task, "config": Config().to_dict(), "meta": {"num_classes": 2},
                "model": model.state_dict(), "model_ema": ema.state_dict(), "ema_updates": 3}, path)
    loaded, _ = load(path, weights="ema")
    assert torch.equal(loaded.head.weight, ema.head.weight) and not torch.equal(loaded.head.weight, model.head.weight)
    loaded, _ = load(path)
    assert torch.equal(loaded.head.weight, model.head.weight)


# ----------------------------------------------------------------------------- the config
@pytest.mark.parametrize("engine, message", [
    ({"ema_decay": 1.0}, r"engine\.ema_decay=1\.0 must be in \[0, 1\)"),
    ({"ema_decay": -0.1}, r"engine\.ema_decay=-0\.1 must be in \[0, 1\)"),
    ({"ema_every_steps": 0}, r"engine\.ema_every_steps must be >= 1"),
    ({"ema_warmup_power": 0}, r"engine\.ema_warmup_gamma and engine\.ema_warmup_power must be > 0"),
    ({"ema_warmup_gamma": -1}, r"engine\.ema_warmup_gamma and engine\.ema_warmup_power must be > 0"),
    ({"ema_device": "gpu"}, r"engine\.ema_device: 'gpu' is not one of 'same' \| 'cpu'"),
    ({"ema_decay": "high"}, r"engine\.ema_decay: expected a number"),
])
def test_bad_ema_settings_are_config_errors(engine, message):
    with pytest.raises(ConfigError, match=message):
        build_config(ToyConfig, {"engine": engine})


def test_the_defaults_keep_no_ema_and_the_ema_is_a_copy_on_its_device(tmp_path):
    cfg = build_config(ToyConfig, {"engine": {"out_dir": str(tmp_path), "device": "cpu", "progress": False}})
    assert cfg.engine.ema_decay == 0 and Trainer(ToyTask(cfg, "none")).ema is None
    trainer = Trainer(ToyTask(_toy_cfg(tmp_path / "cpu", ema_decay=0.9, ema_device="cpu"), "none"))
    assert trainer.ema.device == torch.device("cpu") and trainer.ema.module is not trainer.model
    assert trainer.ema.state_dict().keys() == trainer.model.state_dict().keys()
    assert all(a.data_ptr() != b.data_ptr() for a, b in zip(trainer.ema.module.parameters(),
                                                            trainer.model.parameters()))

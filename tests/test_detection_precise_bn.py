"""Precise BN in `splitattn detect train` (``optim.precise_bn_iters``), as detectron2's ``PreciseBN`` hook.

A tiny Mask R-CNN (BN in backbone, FPN and heads) trains on the Fashion-MNIST scenes twice, with and without
precise BN; the BN statistics it leaves must be what :func:`update_bn_stats` computes, from the other run's
final weights, on the forward passes training would run next.
"""

from __future__ import annotations

import re

import pytest
import torch

from benchmarks.scenes.generator import make_scenes
from splitattn.cli import main
from splitattn.detection.config import load_detect_config
from splitattn.detection.data import CocoDetection, collate_detection
from splitattn.detection.task import load_detector_checkpoint
from splitattn.engine.config import ConfigError
from splitattn.engine.loop import split_batch, to_device
from splitattn.engine.precise_bn import get_bn_modules, update_bn_stats
from splitattn.engine.sampler import iteration_batches
from splitattn.seeding import derive_seed
from tests.test_detection import _tiny_detector_run

BN_STATS = ("running_mean", "running_var", "num_batches_tracked")


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    root = tmp_path_factory.mktemp("scenes")
    make_scenes(root, num_train=8, num_val=4, size=96, object_size=(24, 48), seed=3, progress=False)
    return root


def test_precise_bn_iters_config_rule():
    assert load_detect_config(None, []).optim.precise_bn_iters == 0  # off unless asked (see docs/detection.md)
    assert load_detect_config(None, ["optim.precise_bn_iters=200"]).optim.precise_bn_iters == 200
    with pytest.raises(ConfigError, match=re.escape("optim.precise_bn_iters must be >= 0")):
        load_detect_config(None, ["optim.precise_bn_iters=-1"])


def test_detect_train_precise_bn_equals_update_bn_stats(scenes, tmp_path, capsys):
    # 2 steps of 4 images in 2 micro-batches of 2; an evaluation (without a validation set) after each step
    common = ["data.val_annotations=", "optim.batch_size=4", "optim.accum_steps=2", "optim.max_iters=2",
              "optim.steps=[2]", "optim.warmup_iters=1", "engine.eval_every_steps=1", "engine.tensorboard=false"]
    plain, precise = tmp_path / "plain", tmp_path / "precise"
    assert main(["detect", "train", *_tiny_detector_run(scenes, plain), *common]) == 0
    assert "precise BN" not in capsys.readouterr().out
    assert main(["detect", "train", *_tiny_detector_run(scenes, precise), *common, "optim.precise_bn_iters=3"]) == 0
    out = capsys.readouterr().out
    for step in (1, 2):  # before the evaluation after step 1 and at the end
        assert f"step {step}/2: precise BN statistics from 3 training batches of 2 images per process" in out, out
    assert out.count("precise BN") == 2

    before = torch.load(plain / "checkpoints" / "last.pth", weights_only=True)["model"]
    after = torch.load(precise / "checkpoints" / "last.pth", weights_only=True)["model"]
    stats = [k for k in before if k.endswith(BN_STATS)]
    assert len(stats) > 3 * 30  # backbone, FPN, box and mask heads
    # precise BN changes nothing training depends on: the weights are those of the run without it ...
    for key in before.keys() - set(stats):
        assert torch.equal(before[key], after[key]), key
    # ... and every BN saw 2 × 3 more batches
    for key in (k for k in stats if k.endswith("num_batches_tracked")):
        assert after[key] == before[key] + 6, key

    # what update_bn_stats computes from the final weights on the forwards training would run next: this
    # process's micro-batches of steps 2, 3, … (training order and flips), each seeded as that training forward
    model = load_detector_checkpoint(plain / "checkpoints" / "last.pth")[0].train()
    cfg = load_detect_config(None, [*_tiny_detector_run(scenes, plain), *common])
    train_set = CocoDetection(cfg.data.train_images, cfg.data.train_annotations, train=True, masks=True,
                              flip_prob=cfg.data.flip_prob)

    def micro_batches():
        for step, batch in enumerate(iteration_batches(train_set, collate_detection, 2, 4, 4, cfg.engine.seed, 0, 1),
                                     start=2):
            for index, chunk in enumerate(split_batch(to_device(batch, torch.device("cpu")), 2)):
                yield derive_seed(cfg.engine.seed, 2, step, index), chunk

    def forward(module, item):
        torch.manual_seed(item[0])
        return module(*item[1])

    assert len(get_bn_modules(model)) * 3 == len(stats)
    assert update_bn_stats(model, micro_batches(), 3, forward=forward, progress=False) == 3
    expected = model.state_dict()
    changed = 0
    for key in (k for k in stats if not k.endswith("num_batches_tracked")):
        torch.testing.assert_close(after[key], expected[key], rtol=0, atol=0, msg=key)  # same arithmetic
        changed += not torch.allclose(after[key], before[key], rtol=1e-3, atol=1e-5)
    assert changed > len(stats) // 3  # most statistics moved away from the running averages


def test_detect_train_precise_bn_without_batchnorm_is_skipped(scenes, tmp_path, capsys):
    """Like detectron2's hook, precise BN does nothing (and says so) when no BN layer trains."""
    run = ["detect", "train", *_tiny_detector_run(scenes, tmp_path / "gn"), "model.norm=gn", "data.val_annotations=",
           "optim.max_iters=1", "optim.steps=[1]", "optim.warmup_iters=1", "optim.precise_bn_iters=3",
           "engine.tensorboard=false"]
    assert main(run) == 0
    assert "step 1/1: precise BN skipped: the model has no BatchNorm layer in training mode (model.norm=gn)" in \
        capsys.readouterr().out

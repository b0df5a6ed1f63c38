"""Gradient checkpointing against its definition: the same outputs, gradients and BatchNorm statistics as without
it, per stage, in classifiers, feature backbones and detectors, and from the training configs."""

from __future__ import annotations

import copy

import pytest
import torch

from splitattn import create_model
from splitattn.layers import checkpoint_blocks
from splitattn.models import set_grad_checkpointing


def _step(model, x, seed=3):
    torch.manual_seed(seed)  # DropBlock draws its mask: the recomputation must replay it
    out = model(x)
    out = out if isinstance(out, torch.Tensor) else sum(o.sum() for o in out)
    out.square().mean().backward()
    return out.detach()


def _bn_buffers(model):
    return {k: v for k, v in model.state_dict().items() if "running" in k or "num_batches" in k}


@pytest.mark.parametrize("stages,features_only,lean", [(True, False, False), ([2], False, False),
                                                       ([3, 4], True, False), (True, True, False), (True, False, True)])
def test_same_outputs_gradients_and_bn_statistics(stages, features_only, lean):
    """``lean``: with the memory-efficient split attention too (a custom autograd function that the recomputation
    runs again)."""
    plain = create_model("resnest14", drop_block_rate=0.2, features_only=features_only,
                         memory_efficient=lean).double().train()
    checkpointed = copy.deepcopy(plain)
    checkpointed.set_grad_checkpointing(stages)
    assert checkpointed.grad_checkpointing
    x = torch.randn(4, 3, 64, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    for _ in range(2):  # running statistics after two steps: one update each, not two
        assert torch.equal(_step(plain, x), _step(checkpointed, x))
    for (name, a), (_, b) in zip(plain.named_parameters(), checkpointed.named_parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-12, atol=1e-14, msg=name)
    mine, theirs = _bn_buffers(checkpointed), _bn_buffers(plain)
    assert all(torch.equal(mine[k], theirs[k]) for k in theirs)


def test_plain_torch_checkpoint_would_count_bn_twice():
    """Why checkpoint_blocks freezes the statistics in the recomputation: without that they drift."""
    from torch.utils.checkpoint import checkpoint

    stage = create_model("resnest14").layer1.train()
    reference, naive, ours = copy.deepcopy(stage), copy.deepcopy(stage), copy.deepcopy(stage)
    x = torch.randn(2, 64, 16, 16, requires_grad=True)
    reference(x).sum().backward()
    checkpoint(naive, x, use_reentrant=False).sum().backward()
    checkpoint_blocks(ours, x).sum().backward()
    key = "0.bn1.running_mean"
    assert torch.equal(ours.state_dict()[key], reference.state_dict()[key])
    assert not torch.equal(naive.state_dict()[key], reference.state_dict()[key])
    assert naive.state_dict()["0.bn1.num_batches_tracked"] == 2


def test_eval_and_no_grad_do_not_checkpoint(monkeypatch):
    model = create_model("resnest14")
    model.set_grad_checkpointing()
    calls = []
    monkeypatch.setattr("splitattn.models.resnest.checkpoint_blocks", lambda stage, x: calls.append(1) or stage(x))
    model.eval()(torch.randn(1, 3, 64, 64))
    with torch.no_grad():
        model.train()(torch.randn(2, 3, 64, 64))
    assert not calls
    model.train()(torch.randn(2, 3, 64, 64))
    assert len(calls) == 4


def test_compiled_training_with_checkpointing_is_refused(tmp_path):
    from tests.test_train import CONFIG, TINY, splitattn

    result = splitattn("train", "--config", CONFIG, *TINY, "engine.compile=true", "model.grad_checkpointing=true",
                       f"engine.out_dir={tmp_path}", check=False)
    assert result.returncode == 2 and "engine.compile with model.grad_checkpointing" in result.stderr


def test_bad_stage_values_and_models_without_resnest():
    model = create_model("resnest14")
    with pytest.raises(ValueError, match="stages 1..4"):
        model.set_grad_checkpointing([5])
    model.set_grad_checkpointing(False)
    assert model.grad_checkpointing == ()
    with pytest.raises(ValueError, match="holds no ResNeSt"):
        set_grad_checkpointing(torch.nn.Linear(2, 2), True)


def test_detector_backbone_checkpoints_with_the_same_gradients():
    from splitattn.detection import create_detector

    kwargs = dict(num_classes=3, norm="bn", freeze_at=0, min_size=(96,), max_size=128, test_size=96,
                  base_planes=16, stem_width=8)
    torch.manual_seed(0)
    plain = create_detector("faster_rcnn", "resnest14", **kwargs).train()
    checkpointed = copy.deepcopy(plain)
    assert set_grad_checkpointing(checkpointed, [2, 3]) == 1
    images = [torch.rand(3, 96, 112, generator=torch.Generator().manual_seed(2))] * 2
    targets = [{"boxes": torch.tensor([[10.0, 12.0, 60.0, 70.0]]),
                "labels": torch.tensor([1])}] * 2
    for model in (plain, checkpointed):
        torch.manual_seed(4)
        sum(model(images, targets).values()).backward()
    for (name, a), (_, b) in zip(plain.named_parameters(), checkpointed.named_parameters()):
        if a.grad is not None:
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-7, msg=name)
    mine, theirs = _bn_buffers(checkpointed), _bn_buffers(plain)
    assert theirs and all(torch.equal(mine[k], theirs[k]) for k in theirs)


def test_training_config_key_trains_the_same_run(tmp_path):
    """`model.grad_checkpointing` in a real training run (Fashion-MNIST, the CLI): the same losses step by step."""
    from tests.test_data import _require_fashion_mnist
    from tests.test_train import CONFIG, TINY, losses, splitattn

    _require_fashion_mnist()
    runs = {}
    for label, extra in [("plain", []), ("checkpointed", ["model.grad_checkpointing=[2, 3, 4]"])]:
        out = tmp_path / label
        splitattn("train", "--config", CONFIG, *TINY, "engine.max_steps=4", "optim.drop_block=0.1",
                  f"engine.out_dir={out}", *extra)
        runs[label] = losses(out)
    assert len(runs["plain"]) == 4 and runs["plain"] == runs["checkpointed"]

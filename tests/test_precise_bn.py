"""Precise BN against fvcore's ``update_bn_stats``, the function detectron2's ``PreciseBN`` hook runs."""

from __future__ import annotations

import copy
import logging
import warnings

import pytest
import torch
from torch import nn

import splitattn
from splitattn.engine.precise_bn import update_bn_stats
from splitattn.layers.norm import FrozenBatchNorm2d
from splitattn.layers.sync_batchnorm import SyncBatchNorm


def fvcore_update_bn_stats():
    try:  # a test oracle only: the library never imports fvcore
        with warnings.catch_warnings():  # fvcore's import scripts a function: torch's jit deprecation warning
            warnings.simplefilter("ignore", FutureWarning)
            from fvcore.nn.precise_bn import update_bn_stats as oracle
    except ImportError as error:
        pytest.fail(f"test oracle fvcore is not installed ({error}): run `make oracles`", pytrace=False)
    return oracle


class SmallNet(nn.Module):
    """Every kind of BN precise BN updates, plus the kinds it must leave alone."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, stride=2, padding=1)
        self.sync = SyncBatchNorm(8, momentum=None)  # splitattn's own (plain BN outside torchrun)
        self.torch_sync = nn.SyncBatchNorm(8, momentum=0.03)
        self.frozen = FrozenBatchNorm2d(8)
        self.eval_bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 6)
        self.bn1d = nn.BatchNorm1d(6)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = self.conv2(x)
        x = self.eval_bn(self.frozen(self.torch_sync(self.sync(x))))
        return self.bn1d(self.fc(x.mean((2, 3))))


def small_net(dtype=torch.float32) -> SmallNet:
    torch.manual_seed(0)
    model = SmallNet().to(dtype).train()
    with torch.no_grad():  # stats that are not BN's initial 0 / 1, so "left alone" is visible
        for bn in (model.frozen, model.eval_bn):
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 2)
    model.eval_bn.eval()
    return model


def image_batches(sizes, dtype=torch.float32, hw=8, seed=1) -> list[torch.Tensor]:
    """Batches of differing size, brightness and contrast: per-batch statistics that really differ."""
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(n, 3, hw, hw, generator=gen) * (0.5 + torch.rand(1, generator=gen).item())
             + torch.randn(1, 3, 1, 1, generator=gen)).to(dtype) for n in sizes]


def buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "num_batches" in k}


def momenta(model: nn.Module) -> dict[str, float | None]:
    return {n: m.momentum for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}


def modes(model: nn.Module) -> dict[str, bool]:
    return {n: m.training for n, m in model.named_modules()}


def assert_same_stats(ours: nn.Module, theirs: nn.Module, rtol: float) -> None:
    expected = buffers(theirs)
    got = buffers(ours)
    assert got.keys() == expected.keys()
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=rtol, atol=0, msg=lambda m, k=key: f"{k}: {m}")


@pytest.mark.parametrize("dtype, rtol", [(torch.float32, 1e-6), (torch.float64, 1e-12)])
def test_small_net_matches_fvcore(dtype, rtol):
    model = small_net(dtype)
    batches = image_batches([5, 3, 8, 4, 6, 2, 7, 7], dtype)
    before, before_momenta, before_modes = buffers(model), momenta(model), modes(model)
    theirs = copy.deepcopy(model)
    fvcore_update_bn_stats()(theirs, iter(batches), num_iters=6)
    stream = iter(batches)
    assert update_bn_stats(model, stream, num_iters=6, progress=False) == 6
    assert next(stream) is batches[6], "takes exactly num_iters batches, no more"

    assert_same_stats(model, theirs, rtol)
    after = buffers(model)
    for name in ("bn1", "sync", "torch_sync", "bn1d"):
        assert not torch.equal(after[f"{name}.running_mean"], before[f"{name}.running_mean"]), name
        assert after[f"{name}.num_batches_tracked"] == before[f"{name}.num_batches_tracked"] + 6
    assert momenta(model) == before_momenta == momenta(theirs)
    assert modes(model) == before_modes
    assert all(not bn._forward_pre_hooks for bn in model.modules())


@pytest.mark.parametrize("norm", ["bn", "syncbn"])
def test_resnest_matches_fvcore(norm):
    torch.manual_seed(0)
    model = splitattn.create_model("resnest50", base_planes=16, stem_width=16, num_classes=10, norm_layer=norm)
    model.train()
    # the attention BNs see one pooled value per image: every batch needs two images at least
    batches = image_batches([4, 3, 2, 4, 3], hw=32, seed=2)
    theirs = copy.deepcopy(model)
    fvcore_update_bn_stats()(theirs, iter(batches), num_iters=5)
    assert update_bn_stats(model, batches, num_iters=5, progress=False) == 5
    assert_same_stats(model, theirs, rtol=1e-6)
    assert momenta(model) == momenta(theirs) and model.training


def test_direct_computation_of_one_bn_layer():
    """fvcore 0.1.5 pools all values a layer saw: their mean and *biased* variance, batches weighted by
    size (spatial positions count). Not the mean of per-batch unbiased variances (fvcore's
    ``_MeanOfBatchVarianceEstimator``, which it defines but does not use)."""
    bn = nn.BatchNorm2d(3, momentum=0.1).double().train()
    batches = [b.double() for b in image_batches([4, 2, 6], hw=5) + image_batches([3], hw=3, seed=3)]
    update_bn_stats(bn, batches, num_iters=4, progress=False)
    pooled = torch.cat([b.transpose(0, 1).reshape(3, -1) for b in batches], dim=1)
    torch.testing.assert_close(bn.running_mean, pooled.mean(1), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(bn.running_var, pooled.var(1, unbiased=False), rtol=1e-12, atol=1e-14)

    # equal batch sizes: the mean is the plain mean of the batch means
    bn = nn.BatchNorm2d(3).double().train()
    batches = [b.double() for b in image_batches([4, 4, 4, 4], hw=5, seed=4)]
    update_bn_stats(bn, batches, num_iters=4, progress=False)
    per_batch = [b.transpose(0, 1).reshape(3, -1) for b in batches]
    means = torch.stack([x.mean(1) for x in per_batch])
    torch.testing.assert_close(bn.running_mean, means.mean(0), rtol=1e-12, atol=1e-14)
    squares = torch.stack([x.mean(1) ** 2 + x.var(1, unbiased=False) for x in per_batch])
    torch.testing.assert_close(bn.running_var, squares.mean(0) - means.mean(0) ** 2, rtol=1e-12, atol=1e-14)
    mean_of_unbiased = torch.stack([x.var(1) for x in per_batch]).mean(0)
    assert (bn.running_var - mean_of_unbiased).abs().min() > 1e-3, "includes the spread of the batch means"


def test_frozen_eval_and_untracked_bns_are_left_alone(caplog):
    model = small_net()
    model.untracked = nn.BatchNorm2d(8, track_running_stats=False)  # fvcore fails on these (no buffers)
    before = buffers(model)
    update_bn_stats(model, image_batches([4, 4]), num_iters=2, progress=False)
    after = buffers(model)
    for key in before:
        if key.startswith(("frozen.", "eval_bn.")):
            assert torch.equal(after[key], before[key]), key
    assert not model.eval_bn.training and model.training

    # nothing to update: detectron2's hook disables itself; here nothing is read from the batches
    model.eval()
    stream = iter(image_batches([4, 4, 4]))
    first = next(iter(image_batches([4, 4, 4])))
    with caplog.at_level(logging.INFO, logger="splitattn.engine.precise_bn"):
        assert update_bn_stats(model, stream, num_iters=2, progress=False) == 0
    assert torch.equal(next(stream), first)
    assert "no BatchNorm layer in training mode" in caplog.text
    assert torch.equal(buffers(model)["bn1.running_mean"], after["bn1.running_mean"])


def test_too_few_batches_raise_and_restore_the_model():
    model = small_net()
    before, before_momenta = buffers(model), momenta(model)
    with pytest.raises(ValueError) as info:
        update_bn_stats(model, (b for b in image_batches([4, 4, 4])), num_iters=5, progress=False)
    message = str(info.value)
    assert message == ("precise BN needs 5 batches but `batches` yielded only 3: "
                       "pass a longer (or repeating) loader or lower num_iters")
    assert "\n" not in message
    after = buffers(model)
    assert all(torch.equal(after[k], before[k]) for k in before), "statistics restored"
    assert momenta(model) == before_momenta
    assert all(not bn._forward_pre_hooks for bn in model.modules())

    # a sized iterable fails before any forward pass
    calls = []
    with pytest.raises(ValueError, match="needs 5 batches but `batches` yielded only 2"):
        update_bn_stats(model, image_batches([4, 4]), num_iters=5, progress=False,
                        forward=lambda m, b: calls.append(m(b)))
    assert not calls
    with pytest.raises(ValueError, match=r"num_iters >= 1, got 0"):
        update_bn_stats(model, image_batches([4]), num_iters=0, progress=False)

    # fvcore asserts instead (an off-by-one count, and it leaves momentum 1 and its hooks behind)
    theirs = small_net()
    with pytest.raises(AssertionError, match="run for 5 iterations, but the dataloader stops at 2 iterations"):
        fvcore_update_bn_stats()(theirs, image_batches([4, 4, 4]), num_iters=5)
    assert theirs.bn1.momentum == 1.0


def test_momentum_restored_and_custom_forward():
    model = small_net()
    model.bn1.momentum = 0.25
    before_momenta = momenta(model)
    reference = copy.deepcopy(model)
    images = image_batches([4, 5, 6])
    update_bn_stats(reference, images, num_iters=3, progress=False)
    # batches as a training loader gives them: the forward picks the input
    pairs = [{"image": x, "label": torch.zeros(len(x), dtype=torch.long)} for x in images]
    assert update_bn_stats(model, pairs, num_iters=3, forward=lambda m, b: m(b["image"]), progress=False) == 3
    assert momenta(model) == before_momenta
    assert model.sync.momentum is None and model.torch_sync.momentum == 0.03 and model.bn1.momentum == 0.25
    assert_same_stats(model, reference, rtol=0)


class Branches(nn.Module):
    """``sometimes`` runs on odd batches only; ``never`` does not run at all."""

    def __init__(self):
        super().__init__()
        self.always, self.sometimes, self.never = nn.BatchNorm1d(4), nn.BatchNorm1d(4), nn.BatchNorm1d(4)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.sometimes(self.always(x)) if self.calls % 2 else self.always(x)


def test_layers_skipped_in_some_batches():
    torch.manual_seed(0)
    ours = Branches().train()
    theirs = copy.deepcopy(ours)
    batches = [torch.randn(n, 4) * 2 + 1 for n in (5, 3, 6, 4)]
    fvcore_update_bn_stats()(theirs, batches, num_iters=4)
    update_bn_stats(ours, batches, num_iters=4, progress=False)
    for name in ("always", "sometimes"):
        torch.testing.assert_close(getattr(ours, name).running_mean, getattr(theirs, name).running_mean,
                                   rtol=1e-6, atol=0)
        torch.testing.assert_close(getattr(ours, name).running_var, getattr(theirs, name).running_var,
                                   rtol=1e-6, atol=0)
    # never ran: fvcore writes a zero variance; we keep the layer's statistics
    assert torch.equal(theirs.never.running_var, torch.zeros(4))
    assert torch.equal(ours.never.running_mean, torch.zeros(4)) and torch.equal(ours.never.running_var, torch.ones(4))


def test_a_bn_run_twice_in_one_forward_is_refused():
    bn = nn.BatchNorm1d(4).train()
    model = nn.Sequential(bn, bn)
    with pytest.raises(ValueError, match="BN layer '0' ran twice in one forward"):
        update_bn_stats(model, [torch.randn(4, 4)], num_iters=1, progress=False)
    assert bn.momentum == 0.1 and torch.equal(bn.running_mean, torch.zeros(4)) and not bn._forward_pre_hooks

"""Each piece of the training recipe against its definition (paper-facts.md §7)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import transforms

from splitattn import create_model
from splitattn.classification import recipe
from splitattn.classification.config import load_classification_config as load_config
from splitattn.classification.recipe import (
    cutmix,
    drop_block_prob,
    learning_rate,
    mix_batch,
    mixup,
    mixup_active,
    smooth_one_hot,
    soft_cross_entropy,
)
from splitattn.classification.transforms import (
    IMAGENET_EIGVAL,
    IMAGENET_EIGVEC,
    DistortedBoxCrop,
    Lighting,
    imagenet_train_transform,
    pad_crop_flip,
)
from splitattn.engine.optim import parameter_groups
from splitattn.layers import DropBlock2D, set_drop_block_prob
from tests.conftest import foolbox_photos


def test_warmup_is_linear_from_zero_then_cosine_to_zero():
    base, total, warm = 3.2, 1000, 100
    lrs = [learning_rate(u, base, total, warm) for u in range(1, total + 1)]
    assert lrs[0] == pytest.approx(base / warm) and lrs[warm - 1] == pytest.approx(base)
    assert all(b > a for a, b in zip(lrs[: warm - 1], lrs[1:warm]))
    mid = warm + (total - warm) // 2
    assert learning_rate(mid, base, total, warm) == pytest.approx(base / 2)
    assert learning_rate(warm + 300, base, total, warm) == pytest.approx(
        0.5 * base * (1 + math.cos(math.pi * 300 / 900)))
    assert lrs[-1] == pytest.approx(0.0, abs=1e-12)
    assert all(b <= a for a, b in zip(lrs[warm - 1:], lrs[warm:]))


@pytest.mark.parametrize("name,batch,lr,train_crop,eval_crop,drop", [
    ("resnest50", 8192, 3.2, 224, 224, 0.0), ("resnest101", 4096, 1.6, 224, 256, 0.0),
    ("resnest200", 2048, 0.8, 256, 320, 0.2), ("resnest269", 2048, 0.8, 320, 416, 0.2)])
def test_imagenet_configs_reproduce_the_released_recipe(name, batch, lr, train_crop, eval_crop, drop):
    cfg = load_config(f"configs/imagenet/{name}.yaml")
    o, d = cfg.optim, cfg.data
    assert (cfg.model.name, o.batch_size, d.train_crop, d.eval_crop, cfg.model.drop_rate) == \
        (name, batch, train_crop, eval_crop, drop)
    assert cfg.base_lr() == pytest.approx(lr) == pytest.approx(0.1 * batch / 256)
    assert (o.epochs, o.warmup_epochs, o.momentum, o.nesterov, o.weight_decay) == (270, 5, 0.9, True, 1e-4)
    assert (o.label_smoothing, o.mixup, o.mixup_off_epochs, o.drop_block, o.zero_init_last) == (0.1, 0.2, 0, 0.1, True)
    assert (d.auto_augment, d.color_jitter, d.lighting, cfg.engine.amp) == ("imagenet", 0.4, 0.1, "none")


def test_weight_decay_only_on_conv_and_linear_weights():
    model = create_model("resnest50_fast_2s2x40d")
    decay, no_decay = parameter_groups(model, 1e-4)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    spared = {names[id(p)] for p in no_decay["params"]}
    assert decayed.isdisjoint(spared) and decayed | spared == set(names.values())
    modules = list(model.named_modules())
    convs_linears = {f"{n}.weight" for n, m in modules if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))}
    assert decayed == convs_linears
    norms = {f"{n}.{p}" for n, m in modules if isinstance(m, torch.nn.BatchNorm2d) for p in ("weight", "bias")}
    biases = {n for n in names.values() if n.endswith(".bias")}
    assert spared == norms | biases
    # the official name filter ('bn' in name or 'bias' in name) decays these norm weights; we do not
    missed = {n for n in norms if not ("bn" in n or "bias" in n)}
    assert {"conv1.1.weight", "conv1.4.weight", "layer1.0.downsample.2.weight"} <= missed <= spared
    assert decay["weight_decay"] == 1e-4 and no_decay["weight_decay"] == 0.0


def test_label_smoothing_targets_and_loss_match_torch():
    labels = torch.tensor([0, 3, 9, 3])
    target = smooth_one_hot(labels, 10, 0.1)
    assert target[0, 0] == pytest.approx(1 - 0.1 + 0.01) and target[0, 1] == pytest.approx(0.01)
    torch.testing.assert_close(target.sum(1), torch.ones(4))
    logits = torch.randn(4, 10)
    torch.testing.assert_close(soft_cross_entropy(logits, target), F.cross_entropy(logits, labels, label_smoothing=0.1))


def test_mixup_pairs_with_the_reversed_batch_and_mixes_the_loss_linearly():
    x = torch.randn(6, 3, 4, 4)
    labels = torch.tensor([0, 1, 2, 3, 4, 5])
    target = smooth_one_hot(labels, 7, 0.1)
    mixed_x, mixed_t = mixup(x, target, 0.3)
    for i in range(6):
        torch.testing.assert_close(mixed_x[i], 0.3 * x[i] + 0.7 * x[5 - i])
    logits = torch.randn(6, 7)
    expected = 0.3 * F.cross_entropy(logits, labels, label_smoothing=0.1) + \
        0.7 * F.cross_entropy(logits, labels.flip(0), label_smoothing=0.1)
    torch.testing.assert_close(soft_cross_entropy(logits, mixed_t), expected)


def test_cutmix_pastes_one_box_of_the_reversed_batch_and_weighs_targets_by_its_area():
    x = torch.arange(6 * 2 * 10 * 12, dtype=torch.float32).reshape(6, 2, 10, 12)
    target = smooth_one_hot(torch.arange(6), 6, 0.0)
    for seed, lam in [(0, 0.3), (1, 0.7), (2, 0.05), (3, 0.99)]:
        torch.manual_seed(seed)
        mixed, mixed_t = cutmix(x, target, lam)
        pasted = (mixed != x).any(0).any(0)  # H × W: where any sample took its partner's pixels
        rows, cols = pasted.any(1).nonzero().flatten(), pasted.any(0).nonzero().flatten()
        area = int(pasted.sum())
        if area:  # one axis-aligned box: its bounding box is full
            assert area == len(rows) * len(cols) == (rows[-1] - rows[0] + 1) * (cols[-1] - cols[0] + 1)
            assert area <= math.ceil((1 - lam) * 120) + 1  # never more than asked (clipped at the border)
        for i in range(6):
            torch.testing.assert_close(mixed[i][:, pasted], x[5 - i][:, pasted])
            torch.testing.assert_close(mixed[i][:, ~pasted], x[i][:, ~pasted])
            kept = 1 - area / 120
            assert mixed_t[i, i] == pytest.approx(kept) and mixed_t[i, 5 - i] == pytest.approx(1 - kept)
        torch.testing.assert_close(mixed_t.sum(1), torch.ones(6))


def test_mix_batch_picks_mixup_or_cutmix_by_the_alphas(monkeypatch):
    x, target = torch.randn(4, 3, 8, 8), smooth_one_hot(torch.arange(4), 4, 0.0)
    picked = []
    for name in ("mixup", "cutmix"):
        original = getattr(recipe, name)
        monkeypatch.setattr(recipe, name, lambda *a, _n=name, _f=original: picked.append(_n) or _f(*a))

    def kinds(mixup_alpha, cutmix_alpha, batches):
        picked.clear()
        torch.manual_seed(0)
        for _ in range(batches):
            mixed, mixed_t = mix_batch(x, target, mixup_alpha, cutmix_alpha)
            torch.testing.assert_close(mixed_t.sum(1), torch.ones(4))
        return set(picked)

    assert kinds(0.2, 0.0, 10) == {"mixup"}
    assert kinds(0.0, 1.0, 10) == {"cutmix"}
    assert kinds(0.2, 1.0, 20) == {"mixup", "cutmix"}


def test_mixup_off_epochs_and_drop_block_ramp():
    assert [mixup_active(e, 10, 0.2, 0) for e in (0, 9)] == [True, True]
    assert [mixup_active(e, 10, 0.2, 3) for e in (6, 7, 9)] == [True, False, False]
    assert not mixup_active(0, 10, 0.0, 0)
    ramp = [drop_block_prob(e, 270, 0.1) for e in range(270)]
    assert ramp[0] == pytest.approx(0.1 / 270) and ramp[-1] == pytest.approx(0.1)
    assert all(b > a for a, b in zip(ramp, ramp[1:]))
    model = create_model("resnest14")
    assert set_drop_block_prob(model, ramp[134]) == 6
    assert {m.drop_prob for m in model.modules() if isinstance(m, DropBlock2D)} == {ramp[134]}


def test_autoaugment_policy_wiring_and_order():
    steps = imagenet_train_transform(224).transforms
    kinds = [type(s).__name__ for s in steps]
    assert kinds == ["ToMode", "AutoAugment", "RandomResizedCrop", "RandomHorizontalFlip", "ColorJitter",
                     "ToTensor", "Lighting", "Normalize"]
    assert steps[1].policy == transforms.AutoAugmentPolicy.IMAGENET  # before the crop, as Gluon
    assert steps[2].scale == (0.08, 1.0) and steps[4].brightness == (0.6, 1.4) and steps[6].std == 0.1
    rand = imagenet_train_transform(224, auto_augment="randaugment").transforms[1]
    assert (type(rand).__name__, rand.num_ops, rand.magnitude, rand.num_magnitude_bins) == ("RandAugment", 2, 12, 31)
    plain = imagenet_train_transform(224, auto_augment="none").transforms
    assert "AutoAugment" not in [type(s).__name__ for s in plain]
    large = imagenet_train_transform(320).transforms
    assert isinstance(large[2], DistortedBoxCrop)
    erased = imagenet_train_transform(224, random_erasing=0.25).transforms[-1]
    assert isinstance(erased, transforms.RandomErasing) and erased.p == 0.25 and erased.value == "random"
    with Image.open(foolbox_photos()[0]) as img:
        torch.manual_seed(0)
        assert imagenet_train_transform(224)(img).shape == (3, 224, 224)
        assert imagenet_train_transform(320)(img).shape == (3, 320, 320)


def test_large_crop_boxes_follow_the_official_constraints():
    crop = DistortedBoxCrop(320)
    torch.manual_seed(1)
    import random

    random.seed(1)
    boxes = [crop.sample_box(500, 375) for _ in range(300)]
    got = [b for b in boxes if b is not None]
    assert len(got) > 250
    for x, y, w, h in got:
        assert 0.1 * 500 * 375 <= w * h <= 500 * 375 and x + w <= 500 and y + h <= 375
        assert 3 / 4 - 0.05 <= w / h <= 4 / 3 + 0.05


def test_lighting_adds_the_pca_colour_shift():
    img = torch.rand(3, 8, 8)
    torch.manual_seed(3)
    out = Lighting(0.1)(img)
    shift = (out - img)[:, 0, 0]
    torch.testing.assert_close(out - img, shift.view(3, 1, 1).expand(3, 8, 8))
    torch.manual_seed(3)
    alpha = torch.randn(3) * 0.1
    torch.testing.assert_close(shift, torch.tensor(IMAGENET_EIGVEC) @ (alpha * torch.tensor(IMAGENET_EIGVAL)))


def test_pad_crop_flip_takes_windows_of_the_padded_image():
    images = torch.arange(2 * 1 * 5 * 5, dtype=torch.float32).view(2, 1, 5, 5) + 1
    out = pad_crop_flip(images, torch.tensor([0, 2]), torch.tensor([1, 2]), torch.tensor([False, True]), 1)
    padded = F.pad(images, (1, 1, 1, 1))
    torch.testing.assert_close(out[0], padded[0, :, 0:5, 1:6])
    torch.testing.assert_close(out[1], padded[1, :, 2:7, 2:7].flip(-1))

"""Fashion-MNIST in the scenes' look: the same drawing as the scene generator, batched in torch, and the
pretraining data built from it (resumable, sharded like the plain batches)."""

from __future__ import annotations

import colorsys

import numpy as np
import pytest
import torch
from PIL import Image

from splitattn.config import ConfigError, load_config
from splitattn.data import scenes
from splitattn.data.fashion_mnist import load_fashion_mnist
from splitattn.data.loaders import build_data
from splitattn.data.scene_style import (
    SceneStyle,
    draw_occluders,
    hsv_to_rgb,
    render_scene_style,
    sample_scene_style,
)
from splitattn.data.train_transforms import random_erasing_boxes, random_zoom, resize_uint8
from tests.test_data import _require_fashion_mnist

CONFIG = "configs/fashion_mnist/resnest_cpu_scenes_style.yaml"


class _Draws:
    """A numpy-Generator stand-in that hands the scene generator fixed draws, in its call order."""

    def __init__(self, *values):
        self.values = list(values)

    def uniform(self, *args, **kwargs):
        return self.values.pop(0)

    normal = uniform


def test_hsv_to_rgb_equals_colorsys():
    hsv = torch.rand(2000, 3, generator=torch.Generator().manual_seed(0))
    hsv[:6, 0] = torch.arange(6) / 6  # sector boundaries
    expected = torch.tensor([colorsys.hsv_to_rgb(*row.tolist()) for row in hsv])
    torch.testing.assert_close(hsv_to_rgb(hsv), expected, atol=1e-6, rtol=0)


def test_rendering_equals_the_scene_generator_for_the_same_draw():
    """Background gradient, noise, tint and alpha blend as scenes.render_scene computes them (one object
    covering the whole canvas, so its 28 px patch needs no resize)."""
    _require_fashion_mnist()
    garment = load_fashion_mnist(None, "test")[0][3].numpy().astype(np.float32)
    rng = np.random.default_rng(7)
    base, shift, angle = rng.uniform(25, 140, 3), rng.uniform(-45, 45, 3), rng.uniform(0, 2 * np.pi)
    noise, tint = rng.normal(0, 4.0, (28, 28, 3)), np.array(colorsys.hsv_to_rgb(0.3, 0.8, 0.9)) * 255
    canvas = scenes._background(_Draws(base, shift, angle, noise), 28)  # the generator's own code
    alpha = (garment / 255.0)[..., None] * (garment > scenes.MASK_THRESHOLD)[..., None]
    expected = np.clip(np.rint(canvas * (1 - alpha) + tint[None, None, :].astype(np.float32) * alpha), 0, 255)

    other = torch.tensor(np.clip(base + shift, 0, 255))[None].float()
    style = SceneStyle(base=torch.tensor(base)[None].float(), other=other,
                       angle=torch.tensor([angle]).float(), tint=torch.tensor(tint)[None].float(),
                       noise=torch.tensor(noise).permute(2, 0, 1)[None].float())
    ours = render_scene_style(torch.from_numpy(garment)[None, None] / 255, style)[0].permute(1, 2, 0) * 255
    # float32 rounding can flip a value sitting on .5: at most one level, on a few pixels
    difference = (ours - torch.from_numpy(expected).float()).abs()
    assert difference.max() <= 1 and (difference > 0).float().mean() < 0.01


def test_drawn_parameters_follow_the_scene_distributions():
    style = sample_scene_style(4000, 8, 8, torch.Generator().manual_seed(1))
    assert style["base"].min() >= 25 and style["base"].max() <= 140
    assert (style["other"] - style["base"]).abs().max() <= 45 + 1e-4
    hsv = torch.tensor([colorsys.rgb_to_hsv(*(c / 255).tolist()) for c in style["tint"][:500]])
    assert hsv[:, 1].min() >= 0.45 - 1e-4 and hsv[:, 2].min() >= 0.75 - 1e-4
    assert style["noise"].std().item() == pytest.approx(4.0, rel=0.02)


def test_random_zoom_geometry():
    square = torch.zeros(3, 1, 16, 16)
    square[:, :, 6:10, 6:10] = 1.0  # a 4-pixel square at the centre
    out = random_zoom(square, torch.tensor([1.0, 2.0, 0.5]), torch.zeros(3, 2))
    assert torch.allclose(out[0], square[0], atol=1e-6)  # scale 1: identity
    assert torch.equal(out[1, 0] > 0.5, torch.nn.functional.pad(torch.ones(8, 8), (4, 4, 4, 4)) > 0)  # 8 px
    assert (out[2, 0] > 0.5).sum() == 4 and out[2].sum().item() == pytest.approx(4.0, abs=1e-4)  # a quarter
    # the shift moves the centre by (shift × half the canvas) in the zoomed image: (0.5, 0) → 4 px right
    moved = random_zoom(square[:1], torch.tensor([1.0]), torch.tensor([[0.5, 0.0]]))
    assert torch.allclose(moved[0, 0, :, 4:], square[0, 0, :, :12], atol=1e-6)


def test_random_erasing_boxes():
    """One axis-aligned box per erased image, of 2-40 % of the canvas (before clipping) and aspect 0.3-3.3,
    on about `probability` of the images; none at probability 0."""
    boxes = random_erasing_boxes(4000, 28, 28, 0.5, torch.Generator().manual_seed(0))
    erased = boxes.flatten(1).any(1)
    assert 0.45 < erased.float().mean().item() < 0.55
    rows, cols = boxes.any(2), boxes.any(1)
    assert torch.equal(rows[:, :, None] & cols[:, None, :], boxes)  # a rectangle, or nothing
    area = boxes[erased].float().mean((1, 2))
    assert area.min().item() >= 0.02 * 0.6 and area.max().item() <= 0.4 * 1.1 and area.mean().item() > 0.15
    aspect = rows[erased].sum(1).float() / cols[erased].sum(1)
    assert aspect.min().item() > 0.2 and aspect.max().item() < 5 and (aspect > 1.5).any() and (aspect < 0.67).any()
    assert not random_erasing_boxes(100, 28, 28, 0.0, torch.Generator().manual_seed(0)).any()


def test_occluders_follow_the_generator_placement_rule():
    """Other garments around each one: at most `count`, behind or in front, and the garment keeps at least
    30 % of its mask visible (the scene generator's rule); no occluders = the plain rendering."""
    _require_fashion_mnist()
    gray = load_fashion_mnist(None, "test")[0][:96, None].float() / 255
    pool = load_fashion_mnist(None, "train")[0][:500, None]
    behind, front = draw_occluders(gray, pool, 3, torch.Generator().manual_seed(3))
    assert behind[0].shape == front[0].shape == (96, 3, 28, 28) and behind[1].shape == (96, 3, 3)
    present = ((behind[0] > 0) | (front[0] > 0)).flatten(2).any(-1)
    assert not (behind[0].flatten(2).any(-1) & front[0].flatten(2).any(-1)).any()  # one place per layer
    assert set(present.sum(1).tolist()) == {0, 1, 2, 3}
    mask = gray[:, 0] * 255 > scenes.MASK_THRESHOLD
    covered = (front[0] * 255 > scenes.MASK_THRESHOLD).any(1)
    kept = (mask & ~covered).sum((1, 2)).float() / mask.sum((1, 2))
    assert kept.min() >= 0.3 and kept.min() < 0.8  # the rule holds, and some garments are really covered
    unruled = draw_occluders(gray, pool, 3, torch.Generator().manual_seed(3), min_visible=0.0)[1][0]
    assert ((mask & ~(unruled * 255 > scenes.MASK_THRESHOLD).any(1)).sum((1, 2)) < 0.3 * mask.sum((1, 2))).any()
    style = sample_scene_style(96, 28, 28, torch.Generator().manual_seed(4))
    no_others = draw_occluders(gray, pool, 0, torch.Generator().manual_seed(3))
    assert torch.equal(render_scene_style(gray, style, *no_others), render_scene_style(gray, style))
    assert not torch.equal(render_scene_style(gray, style, behind, front), render_scene_style(gray, style))
    # a process's share of a global batch: the rows one process would draw
    half = draw_occluders(gray[1::2], pool, 3, torch.Generator().manual_seed(3), positions=torch.arange(1, 96, 2),
                          draws=96)
    for ours, full in zip(half, (behind, front)):
        assert torch.equal(ours[0], full[0][1::2]) and torch.equal(ours[1], full[1][1::2])


@pytest.mark.parametrize("extra", [[], ["data.zoom=[0.6,1.5]"], ["data.occluders=3"], ["data.random_erasing=0.5"]])
def test_scene_style_pretraining_data(extra):
    _require_fashion_mnist()
    cfg = load_config(CONFIG, ["data.train_subset=512", "data.val_subset=300", "optim.batch_size=64", *extra])
    data = build_data(cfg, per_process_batch=64)
    assert data.in_chans == 3 and len(data.mean) == 3
    images, labels, _ = next(data.train.batches(0))
    assert images.shape == (64, 3, 28, 28)
    # RGB, not gray, and no black background: the corners hold the gradient
    rgb = images * torch.tensor(data.std).view(1, 3, 1, 1) + torch.tensor(data.mean).view(1, 3, 1, 1)
    assert (rgb[:, 0] - rgb[:, 1]).abs().mean() > 0.02
    assert rgb[:, :, 0, 0].mean() > 25 / 255 - 0.02
    # resumable and sharded exactly like the plain batches
    again = list(data.train.batches(0, start_step=3))[0]
    assert torch.equal(again[0], list(data.train.batches(0))[3][0])
    ranks = [next(build_data(cfg, 32, r, 2).train.batches(0))[0] for r in range(2)]
    assert torch.equal(torch.stack([ranks[i % 2][i // 2] for i in range(64)]), images)
    val = next(data.val.batches())[0]
    assert val.shape[1] == 3 and torch.equal(val, next(build_data(cfg, 64).val.batches())[0])
    if extra not in (["data.occluders=3"], ["data.random_erasing=0.5"]):
        return  # the checks below compare with the same draw without the option
    plain = load_config(CONFIG, ["data.train_subset=512", "data.val_subset=300", "optim.batch_size=64"])
    plain_images = next(build_data(plain, per_process_batch=64).train.batches(0))[0]
    if "data.occluders=3" in extra:  # the other garments reach the batches: same draw otherwise, other pixels
        assert not torch.equal(images, plain_images)
    else:  # random erasing: the same images, with a box of noise on about half of them
        changed = (images != plain_images).any(1)
        assert torch.equal(changed.any(2)[:, :, None] & changed.any(1)[:, None, :], changed)
        assert 16 <= changed.flatten(1).any(1).sum().item() <= 48


def test_resized_pretraining_data():
    """data.resize: every image, training and test, at that size, bilinear from the 28-px originals as the
    scene generator resizes its garments (the same mask threshold then picks the same garment shape)."""
    _require_fashion_mnist()
    cfg = load_config(CONFIG, ["data.train_subset=512", "data.val_subset=300", "optim.batch_size=64",
                               "data.resize=40", "data.pad_crop=0"])
    data = build_data(cfg, per_process_batch=64)
    assert data.image_size == 40 and next(data.train.batches(0))[0].shape == (64, 3, 40, 40)
    assert next(data.val.batches())[0].shape[-2:] == (40, 40)
    gray = load_fashion_mnist(None, "test")[0][:8]
    pil = torch.stack([torch.from_numpy(np.array(Image.fromarray(g.numpy()).resize((40, 40), Image.BILINEAR)))
                       for g in gray]).float()
    ours = resize_uint8(gray[:, None], 40)[:, 0].float()
    assert ours.shape == (8, 40, 40) and (pil - ours).abs().max().item() <= 2  # the same resampling up to rounding
    assert ((pil > scenes.MASK_THRESHOLD) != (ours > scenes.MASK_THRESHOLD)).float().mean().item() < 0.005
    with pytest.raises(ConfigError, match="data.resize applies to fashion_mnist"):
        load_config(None, ["data.root=/tmp", "data.resize=40"])
    with pytest.raises(ConfigError, match="data.resize must be 0"):
        load_config(CONFIG, ["data.resize=4"])


def test_scene_style_needs_fashion_mnist():
    with pytest.raises(ConfigError, match="fashion_mnist"):
        load_config(None, ["data.root=/tmp", "data.style=scenes"])
    with pytest.raises(ConfigError, match="occluders needs data.style=scenes"):
        load_config(None, ["data.dataset=fashion_mnist", "data.occluders=2"])
    with pytest.raises(ConfigError, match="random_erasing applies to fashion_mnist"):
        load_config(None, ["data.root=/tmp", "data.random_erasing=0.5"])

"""DropBlock as the released weights were trained (Gluon): block 3, one mask per batch, rescaled."""

from __future__ import annotations

import pytest
import torch

from splitattn import DropBlock2D, create_model, set_drop_block_prob


def expected_drop_fraction(p: float, size: int, block: int = 3) -> float:
    """Exact expectation of the dropped fraction for Gluon's seed rate and block growth."""
    gamma = p * size * size / (block**2 * (size - block + 1) ** 2)
    half = block // 2
    cover = torch.tensor([min(i + half, size - 1) - max(i - half, 0) + 1 for i in range(size)], dtype=torch.float64)
    seeds_covering = cover[:, None] * cover[None, :]  # seed positions whose block covers pixel (i, j)
    return float((1 - (1 - gamma) ** seeds_covering).mean())


def test_identity_in_eval_or_at_zero_probability():
    x = torch.randn(2, 4, 8, 8)
    assert DropBlock2D(0.5).eval()(x) is x
    assert DropBlock2D(0.0).train()(x) is x


def test_mask_is_shared_over_the_batch_and_output_rescaled():
    torch.manual_seed(0)
    drop = DropBlock2D(0.3).train()
    x = torch.rand(6, 16, 14, 14) + 0.5  # strictly positive, so zeros are exactly the dropped pixels
    out = drop(x)
    dropped = out == 0
    assert dropped.any() and not dropped.all()
    assert all(torch.equal(dropped[0], dropped[i]) for i in range(1, 6)), "mask must be shared over the batch"
    keep = (~dropped[0]).float()
    torch.testing.assert_close(out[0], x[0] * keep * keep.numel() / keep.sum())


def test_dropped_fraction_matches_the_gluon_rate():
    torch.manual_seed(1)
    size = 14
    for p in (0.1, 0.3):
        out = DropBlock2D(p).train()(torch.ones(1, 4096, size, size))
        observed = float((out == 0).float().mean())
        assert observed == pytest.approx(expected_drop_fraction(p, size), abs=0.006)


def test_blocks_are_3x3():
    torch.manual_seed(2)
    out = DropBlock2D(0.02).train()(torch.ones(1, 256, 20, 20))
    dropped = (out == 0).float()
    # Every dropped pixel lies in a dropped 3×3 square (clipped at the border): erosion then dilation
    # with a 3×3 window gives the same mask back.
    eroded = 1 - torch.nn.functional.max_pool2d(1 - dropped, 3, 1, 1)
    reopened = torch.nn.functional.max_pool2d(eroded, 3, 1, 1)
    interior = (slice(None), slice(None), slice(1, -1), slice(1, -1))
    assert torch.equal(reopened[interior], dropped[interior])


def test_sites_are_the_three_official_ones_in_layers_3_and_4():
    model = create_model("resnest50", drop_block_rate=0.1)
    names = [n for n, m in model.named_modules() if isinstance(m, DropBlock2D)]
    assert len(names) == 3 * (6 + 3)
    assert all(n.startswith(("layer3.", "layer4.")) for n in names)
    assert {n.rsplit(".", 1)[1] for n in names} == {"drop_block1", "drop_block2", "drop_block3"}
    assert set_drop_block_prob(model, 0.05) == 27
    assert all(m.drop_prob == 0.05 for m in model.modules() if isinstance(m, DropBlock2D))
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        set_drop_block_prob(model, 1.5)


def test_drop_block_changes_training_output_only_when_enabled():
    model = create_model("resnest14", num_classes=10, zero_init_last=False).train()  # zero γ would hide the branch
    x = torch.randn(4, 3, 64, 64)
    torch.manual_seed(3)
    plain = model(x)
    set_drop_block_prob(model, 0.3)
    torch.manual_seed(3)
    dropped = model(x)
    assert not torch.allclose(plain, dropped)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))

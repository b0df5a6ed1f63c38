"""The Split-Attention block against a naive per-cardinal-group reading of the paper (eqs. 1-4),
as the official `tests/test_radix_major.py` does, and against the official module itself."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from resnest.torch.splat import SplAtConv2d

from splitattn.layers import RadixSoftmax, SplitAttention, attention_channels
from tests.conftest import max_rel_diff, randomize_


def naive_split_attention(m: SplitAttention, x: torch.Tensor, radix: int, card: int) -> torch.Tensor:
    """Loop over cardinal groups k and splits r; per-group FC layers; softmax over r (sigmoid if R=1)."""
    u = F.relu(m.bn0(m.conv(x)))  # (B, R·C, H, W), radix-major: channel r·C + k·C/K + c
    channels = u.shape[1] // radix
    width = channels // card
    inter = m.fc1.out_channels // card
    bn = m.bn1
    outputs = []
    for k in range(card):
        splits = [u[:, r * channels + k * width: r * channels + (k + 1) * width] for r in range(radix)]
        s = sum(splits).mean((2, 3))  # fused group k, global average pooled: (B, C/K)
        rows = slice(k * inter, (k + 1) * inter)
        z = F.linear(s, m.fc1.weight[rows, :, 0, 0], m.fc1.bias[rows])
        z = (z - bn.running_mean[rows]) / torch.sqrt(bn.running_var[rows] + bn.eps) * bn.weight[rows] + bn.bias[rows]
        z = F.relu(z)
        out_rows = slice(k * radix * width, (k + 1) * radix * width)
        a = F.linear(z, m.fc2.weight[out_rows, :, 0, 0], m.fc2.bias[out_rows]).view(-1, radix, width)
        a = a.softmax(dim=1) if radix > 1 else torch.sigmoid(a)
        outputs.append(sum(a[:, r, :, None, None] * splits[r] for r in range(radix)))
    return torch.cat(outputs, dim=1)


@pytest.mark.parametrize("radix", [1, 2, 4])
@pytest.mark.parametrize("card", [1, 2, 4])
def test_radix_major_block_equals_naive_per_group_reference(radix, card):
    torch.manual_seed(radix * 10 + card)
    channels = 64
    m = SplitAttention(channels, channels, 3, padding=1, cardinality=card, radix=radix)
    randomize_(m, seed=radix + card, image_size=8, in_chans=channels)
    x = torch.randn(3, channels, 9, 7)
    with torch.no_grad():
        ours = m(x)
        ref = naive_split_attention(m, x, radix, card)
    assert ours.shape == (3, channels, 9, 7)
    assert max_rel_diff(ref, ours) <= 1e-6


@pytest.mark.parametrize("radix", [1, 2, 4])
@pytest.mark.parametrize("card", [1, 2, 4])
def test_block_is_bit_identical_to_official_splat(radix, card):
    official = SplAtConv2d(64, 64, 3, stride=2, padding=1, groups=card, bias=False, radix=radix,
                           norm_layer=torch.nn.BatchNorm2d)
    randomize_(official, seed=7, image_size=8, in_chans=64)
    ours = SplitAttention(64, 64, 3, stride=2, padding=1, cardinality=card, radix=radix).eval()
    ours.load_state_dict(official.state_dict(), strict=True)
    x = torch.randn(2, 64, 10, 10)
    with torch.no_grad():
        assert torch.equal(official(x), ours(x))


def test_attention_width_and_radix_softmax():
    assert [attention_channels(c, 2) for c in (64, 128, 256, 512)] == [32, 64, 128, 256]
    assert attention_channels(24 * 4, 1) == 32  # the floor of 32
    logits = torch.randn(5, 2 * 3 * 8, 1, 1)  # K=2, R=3, C/K=8, cardinality-major from fc2
    attn = RadixSoftmax(3, 2)(logits).view(5, 3, 2, 8)  # radix-major out
    torch.testing.assert_close(attn.sum(1), torch.ones(5, 2, 8))
    sig = RadixSoftmax(1, 4)(logits)
    torch.testing.assert_close(sig, torch.sigmoid(logits).view(5, -1))


def test_invalid_radix_or_cardinality_is_a_clear_error():
    with pytest.raises(ValueError, match="radix >= 1"):
        SplitAttention(64, 64, radix=0)
    with pytest.raises(ValueError, match="divisible by cardinality"):
        SplitAttention(64, 60, cardinality=8)


def test_compiled_bf16_training_step_gives_finite_gradients_close_to_eager():
    """Inductor (torch 2.14, CPU) fused the backward of the weighted split sum into a kernel that returned NaN
    gradients for narrow blocks (the scenes preset's widths, followed by the block's 1×1 conv) under bf16
    autocast; the compiled training step now sums the splits as a batched matmul. Its gradients must be finite
    and within twice eager bf16's distance from the fp32 ones."""
    torch.manual_seed(0)
    block = torch.nn.Sequential(SplitAttention(32, 32, radix=2), torch.nn.Conv2d(32, 128, 1, bias=False)).train()
    x = torch.randn(4, 32, 8, 8)

    def gradients(module, bf16=True):
        module.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            module(x).float().square().mean().backward()
        return {name: p.grad.clone() for name, p in block.named_parameters()}

    exact, eager = gradients(block, bf16=False), gradients(block)
    torch._dynamo.reset()
    compiled = gradients(torch.compile(block))
    for name, grad in compiled.items():
        assert torch.isfinite(grad).all(), f"{name}: non-finite gradient from the compiled step"
        # fc1's bias gradient is ~0 (bn1 follows): relative errors are large for both, hence the ratio
        assert max_rel_diff(exact[name], grad) <= 2 * max_rel_diff(exact[name], eager[name]) + 0.01, name

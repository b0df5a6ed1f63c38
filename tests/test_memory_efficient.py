"""The memory-efficient split-attention training path: same loss, gradients and BN running statistics as
the plain path (float64, exact to rounding), one R·C map fewer saved per block, plain path elsewhere."""

from __future__ import annotations

import pytest
import torch

import splitattn


def _pair(name: str, **kwargs):
    torch.manual_seed(0)
    plain = splitattn.create_model(name, num_classes=10, **kwargs).double().train()
    with torch.no_grad():
        for module in plain.modules():
            if isinstance(module, torch.nn.BatchNorm2d):  # away from γ=1, β=0 (and zero-γ) so every term counts
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0, 0.2)
    lean = splitattn.create_model(name, num_classes=10, memory_efficient=True, **kwargs).double().train()
    lean.load_state_dict(plain.state_dict())
    return plain, lean


def saved_megabytes(model: torch.nn.Module, x: torch.Tensor) -> float:
    storages = {}

    def pack(tensor):
        storages[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x).sum()
    return sum(storages.values()) / 2**20


@pytest.mark.parametrize("name", ["resnest14", "resnest50_fast_1s4x24d", "resnest50_fast_4s2x40d"])
def test_gradients_and_statistics_equal_the_plain_path(name):
    plain, lean = _pair(name)
    x = torch.randn(4, 3, 64, 64, dtype=torch.float64)
    for _ in range(2):  # twice: running statistics accumulate identically
        loss_plain, loss_lean = plain(x).pow(2).mean(), lean(x).pow(2).mean()
        plain.zero_grad()
        lean.zero_grad()
        loss_plain.backward()
        loss_lean.backward()
    assert float(loss_lean) == pytest.approx(float(loss_plain), rel=1e-12)
    scale = max(float(p.grad.abs().max()) for p in plain.parameters())
    for (key, p), q in zip(plain.named_parameters(), lean.parameters()):
        assert float((p.grad - q.grad).abs().max()) <= 1e-10 * scale, key
    for (key, a), b in zip(plain.state_dict().items(), lean.state_dict().values()):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-12), key
    lean.eval()
    plain.eval()
    assert torch.allclose(lean(x), plain(x), rtol=1e-12, atol=1e-12)


def test_saves_one_map_per_block_less_and_trains_under_bf16_autocast():
    plain, lean = (m.float() for m in _pair("resnest50_fast_2s2x40d"))
    x = torch.randn(8, 3, 96, 96)
    maps = []  # the split convs' outputs: one R·C map per block is what the lean path stops keeping
    hooks = [m.conv.register_forward_hook(lambda _m, _i, out: maps.append(out.numel() * out.element_size()))
             for m in plain.modules() if isinstance(m, splitattn.SplitAttention)]
    plain_mb = saved_megabytes(plain, x)
    for hook in hooks:
        hook.remove()
    lean_mb = saved_megabytes(lean, x)
    assert plain_mb - lean_mb == pytest.approx(sum(maps) / 2**20, rel=0.02), (plain_mb, lean_mb)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss_lean = lean(x).float().pow(2).mean()
    loss_lean.backward()
    assert all(torch.isfinite(p.grad).all() for p in lean.parameters() if p.grad is not None)


def test_bf16_autocast_rounds_like_the_plain_path():
    from splitattn.layers.memory_efficient import split_attention_train

    torch.manual_seed(0)
    block = splitattn.SplitAttention(64, 64, radix=2, cardinality=2).train()
    with torch.no_grad():
        block.bn0.weight.uniform_(0.5, 1.5)
        block.bn0.bias.normal_(0, 0.2)
    x = torch.randn(8, 64, 16, 16)
    reference = block(x).detach()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        plain, lean = block(x), split_attention_train(block, x)
    assert lean.dtype == plain.dtype == torch.bfloat16
    plain_error = float((plain.float() - reference).abs().max())
    assert float((lean.float() - reference).abs().max()) <= 2 * plain_error


def test_other_norms_keep_the_plain_path():
    model = splitattn.create_model("resnest14", norm_layer="gn", memory_efficient=True).train()
    x = torch.randn(2, 3, 64, 64)
    assert saved_megabytes(model, x) == saved_megabytes(splitattn.create_model("resnest14", norm_layer="gn"), x)

"""deploy(): the inference form equals the trained network for every variant, takes the fused oneDNN
path on the CPU, scripts, compiles without graph breaks, and refuses what it cannot do."""

from __future__ import annotations

import copy

import pytest
import torch

import splitattn
from splitattn.deploy import DeployError, deploy
from tests.conftest import max_rel_diff, randomize_


def _fused_op_calls(model: torch.nn.Module, x: torch.Tensor) -> int:
    with torch.inference_mode(), torch.profiler.profile() as prof:
        model(x)
    return sum(e.count for e in prof.key_averages() if e.key.startswith("mkldnn::_convolution_pointwise"))


@pytest.mark.parametrize("name", splitattn.list_models())
def test_deploy_equals_the_trained_network(name):
    model = randomize_(splitattn.create_model(name), seed=1)
    x = torch.randn(3, 3, 64, 64)
    with torch.inference_mode():
        # the algebra, in float64: folding and fusing change nothing but rounding
        exact = copy.deepcopy(model).double()
        reference = exact(x.double())
        assert max_rel_diff(reference, deploy(exact)(x.double())) <= 1e-10
        # the fast path in float32: as accurate as the plain network's own float32 (deep randomised nets
        # amplify rounding; the plain network in NHWC differs from itself in NCHW by as much)
        fused = deploy(model)
        plain_error = max_rel_diff(reference, model(x).double())
        assert max_rel_diff(reference, fused(x).double()) <= max(3 * plain_error, 1e-5)
        # another batch size (weights are packed per input shape)
        assert max_rel_diff(reference[:1], fused(x[:1]).double()) <= max(3 * plain_error, 1e-5)
    assert model.layer1[0].bn1.running_var.shape  # the original keeps its norms
    # every convolution runs fused: stem 3, per block conv1 + conv2 + conv3 (+ shortcut)
    blocks = [b for b in fused.modules() if type(b).__name__ == "DeployBottleneck"]
    convs = 3 + sum(3 + (b.shortcut is not None) for b in blocks)
    assert _fused_op_calls(fused, x) == convs


def test_deploy_bf16_is_close_and_keeps_channels_last():
    model = randomize_(splitattn.create_model("resnest50_fast_1s4x24d"), seed=2)
    fused = deploy(model).to(torch.bfloat16)
    x = torch.randn(2, 3, 96, 96)
    with torch.inference_mode():
        reference = model(x)
        plain_error = max_rel_diff(reference, copy.deepcopy(model).bfloat16()(x.bfloat16()).float())
        # no worse than the plain network in bf16 (both round every layer to 8 mantissa bits)
        assert max_rel_diff(reference, fused(x.bfloat16()).float()) <= 2 * plain_error
        feats = deploy(splitattn.create_model("resnest14", features_only=True).eval())(x)
    assert all(f.is_contiguous(memory_format=torch.channels_last) for f in feats)


@pytest.mark.parametrize("output_stride", [8, 16])
def test_deploy_features_only_and_dilated(output_stride):
    backbone = randomize_(splitattn.create_model("resnest50", features_only=True, output_stride=output_stride), seed=3)
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        reference, got = backbone(x), deploy(backbone)(x)
    assert [f.shape for f in got] == [f.shape for f in reference]
    assert all(max_rel_diff(a, b) <= 1e-4 for a, b in zip(reference, got))


@pytest.mark.parametrize("norm", ["frozenbn", "gn"])
def test_deploy_other_norms(norm):
    model = splitattn.create_model("resnest14", norm_layer=norm).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)  # GN / frozen BN affine away from identity
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        assert max_rel_diff(model(x), deploy(model)(x)) <= 1e-4


def test_deploy_scripts_traces_and_compiles_without_graph_breaks():
    model = randomize_(splitattn.create_model("resnest26"), seed=4)
    fused = deploy(model)
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        reference = model(x)
        assert max_rel_diff(reference, torch.jit.script(fused)(x)) <= 1e-4
        assert max_rel_diff(reference, torch.jit.trace(fused, x)(x)) <= 1e-4
    torch._dynamo.reset()
    for module, mode in ((fused, "deploy"), (model, "eval")):
        explained = torch._dynamo.explain(module)(x)
        assert explained.graph_break_count == 0, (mode, explained.break_reasons)
    model.train()
    explained = torch._dynamo.explain(model)(x)
    assert explained.graph_break_count == 0, ("train", explained.break_reasons)


def test_compile_for_inference_matches_eager():
    model = randomize_(splitattn.create_model("resnest14"), seed=5)
    torch._dynamo.reset()
    compiled = splitattn.compile_for_inference(deploy(model))
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        assert max_rel_diff(model(x), compiled(x)) <= 1e-4
    with pytest.raises(ValueError, match="model.eval"):
        splitattn.compile_for_inference(model.train())


def test_deploy_refuses_what_it_cannot_do():
    model = splitattn.create_model("resnest14")
    with pytest.raises(DeployError, match=r"eval mode: call model.eval\(\) first"):
        deploy(model)  # training mode: BN statistics would be folded from a moving target
    with pytest.raises(DeployError, match="found none inside Linear"):
        deploy(torch.nn.Linear(2, 2).eval())
    with pytest.raises(DeployError, match="deformable convs"):
        deploy(splitattn.create_model("resnest14", deform_stages=(4,)).eval())
    fused = deploy(model.eval())
    assert not any(p.requires_grad for p in fused.parameters())

"""Every variant through the deployment paths users run: TorchScript (script + trace),
torch.export and torch.compile(fullgraph=True). The official code fails `torch.jit.script`."""

from __future__ import annotations

import pytest
import torch
from torch.export import Dim

import splitattn
from splitattn import create_model


def _check_close(reference: torch.Tensor, got: torch.Tensor, what: str) -> None:
    assert got.shape == reference.shape, what
    torch.testing.assert_close(got, reference, rtol=1e-5, atol=1e-5, msg=what)


@pytest.mark.parametrize("name", splitattn.list_models())
def test_script_trace_export_compile(name):
    model = create_model(name).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        reference = model(x)
        _check_close(reference, torch.jit.script(model)(x), f"{name}: torch.jit.script")
        _check_close(reference, torch.jit.trace(model, x)(x), f"{name}: torch.jit.trace")
        _check_close(reference, torch.export.export(model, (x,)).module()(x), f"{name}: torch.export")
        torch._dynamo.reset()
        compiled = torch.compile(model, fullgraph=True, backend="eager")  # fullgraph: no graph breaks
        _check_close(reference, compiled(x), f"{name}: torch.compile(fullgraph=True)")


def test_inductor_compile_matches_eager():
    model = create_model("resnest14").eval()
    x = torch.randn(2, 3, 64, 64)
    torch._dynamo.reset()
    with torch.no_grad():
        _check_close(model(x), torch.compile(model, fullgraph=True)(x), "inductor")


def test_export_with_dynamic_batch():
    model = create_model("resnest50_fast_1s4x24d").eval()
    program = torch.export.export(model, (torch.randn(2, 3, 64, 64),), dynamic_shapes={"x": {0: Dim("batch")}})
    x = torch.randn(5, 3, 64, 64)
    with torch.no_grad():
        _check_close(model(x), program.module()(x), "dynamic batch")


def test_feature_backbone_scripts_and_exports():
    model = create_model("resnest50", features_only=True, output_stride=8, out_indices=(0, 2, 4)).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        reference = model(x)
        scripted = torch.jit.script(model)(x)
        exported = torch.export.export(model, (x,)).module()(x)
    assert [f.shape[1] for f in reference] == [64, 512, 2048]
    for ref, a, b in zip(reference, scripted, exported):
        _check_close(ref, a, "script features")
        _check_close(ref, b, "export features")

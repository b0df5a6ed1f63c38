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


# ------------------------------------------------------------------ files users ship: ONNX and TorchScript
def _photos_batch(model_name: str, count: int = 3) -> torch.Tensor:
    from PIL import Image

    from tests.conftest import foolbox_photos

    transform = splitattn.create_transform(model_name, crop=128)
    images = []
    for path in foolbox_photos()[:count]:
        with Image.open(path) as img:
            images.append(transform(img))
    return torch.stack(images)


@pytest.mark.parametrize("use_deploy", [False, True])
def test_onnx_dynamic_batch_through_onnxruntime(tmp_path, use_deploy):
    from splitattn.deploy import deploy
    from splitattn.export import check_export, export_model
    from tests.conftest import randomize_

    model = randomize_(create_model("resnest14"), seed=7)
    exported = deploy(model) if use_deploy else model
    path = export_model(exported, tmp_path / "m.onnx", "onnx", image_size=128)
    images = _photos_batch("resnest14")
    check = check_export(model, path, "onnx", images)
    assert check.batch_sizes == (3, 1)  # the file was traced at batch 2: both other sizes run
    assert check.max_rel_diff <= 1e-4 and check.images_per_s > 0
    assert not list(tmp_path.glob("*.partial"))


def test_torchscript_of_the_deploy_form(tmp_path):
    from splitattn.deploy import deploy
    from splitattn.export import check_export, export_model
    from tests.conftest import randomize_

    model = randomize_(create_model("resnest50_fast_2s2x40d"), seed=8)
    path = export_model(deploy(model), tmp_path / "m.pt", "torchscript", image_size=128)
    check = check_export(model, path, "torchscript", _photos_batch("resnest50_fast_2s2x40d", 2))
    assert check.max_rel_diff <= 1e-4


def test_export_cli_and_its_errors(tmp_path, capsys):
    from splitattn.cli import main

    out = tmp_path / "r14.onnx"
    assert main(["export", "resnest14", "--format", "onnx", "--deploy", "--output", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"wrote {out}" in text and "dynamic batch" in text
    diff = float(text.split("max |Δ| ")[1].split()[0])
    assert out.is_file() and diff < 1e-3
    assert main(["export", "resnest51", "--format", "onnx"]) == 2
    assert "unknown model 'resnest51'. Did you mean 'resnest50'" in capsys.readouterr().err
    assert main(["export", "resnest14", "--format", "onnx", "--opset", "9", "--output", str(out)]) == 2
    assert "opset 9 is out of reach" in capsys.readouterr().err


def test_openvino_ir_export_runs_and_matches(tmp_path, capsys):
    """`splitattn export --format openvino`: NAME.xml + NAME.bin, run by OpenVINO on the shipped photos at two batch
    sizes against PyTorch."""
    from splitattn.cli import main

    out = tmp_path / "r14.xml"
    assert main(["export", "resnest14", "--format", "openvino", "--output", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"wrote {out} + {out.with_suffix('.bin')}" in text and "batch sizes (4, 1)" in text
    assert float(text.split("max |Δ| ")[1].split()[0]) < 1e-3
    assert not list(tmp_path.glob("*.partial"))
    assert main(["export", "resnest14", "--format", "openvino", "--output", str(tmp_path / "r14.ir")]) == 2
    assert "name the output r14.xml" in capsys.readouterr().err


"""``splitattn.deploy.optimize``: the AOTInductor package of the fastest CPU form, its outputs against the eager
model, its on-disk cache across processes, backbones, and int8 (PT2E) against fp32. The int8 accuracy on a trained
model is checked through the CLI in test_train.py."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

import splitattn
from splitattn.deploy import QuantizeError, load_package, optimize
from tests.conftest import foolbox_photos

SIZE = 64


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SPLITATTN_HOME", str(tmp_path))
    return tmp_path / "compiled"


def _model(**kwargs):
    torch.manual_seed(0)
    return splitattn.create_model("resnest14", **kwargs).eval()


def test_fp32_package_matches_eager_and_a_second_process_loads_it(cache):
    model = _model()
    images = torch.randn(2, 3, SIZE, SIZE)
    compiled = optimize(model, images, "fp32", progress=False)
    assert not compiled.from_cache and compiled.compile_seconds > 0
    assert compiled.path.parent == cache and compiled.path.suffix == ".pt2"
    with torch.inference_mode():
        expected = model(images)
    got = compiled(images)
    assert (got - expected).abs().max() <= 1e-4 * expected.abs().max()
    assert torch.equal(load_package(compiled.path)(images), got)
    with pytest.raises(ValueError, match=r"compiled for images of shape \(2, 3, 64, 64\)"):
        compiled(torch.randn(3, 3, SIZE, SIZE))

    script = ("import torch, splitattn, json; from splitattn.deploy import optimize; torch.manual_seed(0); "
              "m = splitattn.create_model('resnest14').eval(); "
              f"c = optimize(m, torch.zeros(2, 3, {SIZE}, {SIZE}), 'fp32', progress=False); "
              "print(json.dumps([c.from_cache, c.compile_seconds, c.load_seconds, str(c.path)]))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                            env={**__import__("os").environ, "SPLITATTN_HOME": str(cache.parent)})
    from_cache, seconds, load_seconds, path = json.loads(result.stdout.strip().splitlines()[-1])
    assert from_cache and seconds == 0.0 and path == str(compiled.path), result.stdout
    assert load_seconds < 10
    other = optimize(_model(), images, "bf16", progress=False)  # another dtype is another package
    assert other.path != compiled.path and not other.from_cache


def test_backbone_package_returns_every_feature_map(cache):
    backbone = _model(features_only=True, out_indices=(1, 2, 3, 4))
    images = torch.randn(1, 3, SIZE, SIZE)
    compiled = optimize(backbone, images, "fp32", dynamic_batch=True, progress=False)
    with torch.inference_mode():
        expected = backbone(images)
        got = compiled(images)
        assert len(got) == len(expected) == 4
        for g, e in zip(got, expected):
            assert g.shape == e.shape and (g - e).abs().max() <= 1e-4 * e.abs().max()
        two = torch.cat([images, images.flip(-1)])
        assert compiled(two)[0].shape[0] == 2  # dynamic batch


def test_int8_package_follows_its_quantized_graph_on_real_photos(cache):
    """The compiled int8 kernels against the converted PT2E graph run eagerly (quantize / dequantize written out
    in fp32 ops), on real photos, calibrated on other real photos: the lowering must not change the numerics
    beyond rounding of the int8 requantization."""
    from splitattn.data.images import open_image
    from splitattn.data.transforms import create_transform
    from splitattn.deploy import quantize_int8

    paths = foolbox_photos()
    transform = create_transform("resnest14", crop=SIZE)
    photos = torch.stack([transform(open_image(p)) for p in paths[:16]])
    calibration, check = photos[:12], photos[12:]
    model = _model()
    graph = quantize_int8(model, calibration, progress=False)
    compiled = optimize(model, check, "int8", calibration=calibration, progress=False)
    with torch.inference_mode():
        reference, fp32 = graph(check), model(check)
        got = compiled(check)
    scale = fp32.abs().max()  # measured here: 0.006, 0.017 and 0.017 of it; cosine 0.99985
    assert (got - reference).abs().max() <= 0.02 * scale  # requantization may round a step differently
    assert (got - fp32).abs().max() <= 0.06 * scale
    assert torch.nn.functional.cosine_similarity(got, fp32).min() >= 0.999
    assert (reference - fp32).abs().max() >= 0.002 * scale, "the graph is not quantized"
    with pytest.raises(QuantizeError, match="int8 needs calibration images"):
        optimize(model, check, "int8", progress=False)
    with pytest.raises(QuantizeError, match=r"non-empty \(N, C, H, W\)"):
        quantize_int8(model, torch.empty(0, 3, SIZE, SIZE), progress=False)


def test_quantize_cli_refuses_a_wrong_output_name(tmp_path, capsys):
    from splitattn.cli import main

    assert main(["quantize", "resnest14", "--output", str(tmp_path / "r14.onnx")]) == 2
    assert "an AOTInductor package is NAME.pt2: name the output r14.pt2" in capsys.readouterr().err

"""``splitattn.deploy.optimize``: the AOTInductor package of the fastest CPU form, its outputs against the eager
model, its on-disk cache across processes, backbones, and int8 (PT2E) against fp32. The int8 accuracy on a trained
model is checked through the CLI in test_train.py."""

from __future__ import annotations

import collections
import json
import re
import subprocess
import sys
import zipfile

import pytest
import torch

import splitattn
from splitattn.deploy import QuantizeError, load_package, optimize
from tests.conftest import foolbox_photos

SIZE = 64


def kernel_calls(path) -> collections.Counter:
    """The CPU ops a package's generated C++ wrapper calls (oneDNN convolutions, int8 qconv, …)."""
    with zipfile.ZipFile(path) as archive:
        wrapper = next(n for n in archive.namelist() if n.endswith(".wrapper.cpp"))
        return collections.Counter(re.findall(r"aoti_torch_cpu_(\w+)\(", archive.read(wrapper).decode()))


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
    compiled = optimize(model, images, "fp32", progress=False, meta={"source": "a test"})
    assert not compiled.from_cache and compiled.compile_seconds > 0
    assert compiled.meta["source"] == "a test" and compiled.meta["input_shape"] == [2, 3, SIZE, SIZE]
    assert kernel_calls(compiled.path)["mkldnn__convolution_pointwise"] > 0  # oneDNN with packed weights
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


def test_the_cache_key_follows_what_decides_the_graph():
    """Same weights, another graph (feature maps returned, dilation, avd placement): another package."""
    from splitattn.deploy.package import _fingerprint

    def key(model, dtype="fp32", shape=(2, 3, SIZE, SIZE)):
        return _fingerprint(model, dtype, shape, None)

    base = _model(features_only=True, out_indices=(1, 2, 3, 4))
    keys = {key(base), key(_model(features_only=True, out_indices=(2, 3, 4))),
            key(_model(features_only=True, out_indices=(1, 2, 3, 4), output_stride=8)),
            key(base, "bf16"), key(base, shape=(1, 3, SIZE, SIZE))}
    assert len(keys) == 5
    assert key(base) == key(_model(features_only=True, out_indices=(1, 2, 3, 4)))  # the same model: the same key


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
    as_batches = optimize(model, check, "int8", calibration=list(calibration.split(5)), progress=False)
    compiled = optimize(model, check, "int8", calibration=calibration, progress=False)
    assert compiled.from_cache and compiled.path == as_batches.path  # the same images as a tensor or as batches
    calls = kernel_calls(compiled.path)  # int8 oneDNN convolutions, not the quantize/dequantize graph in fp32
    assert calls["_qconv_pointwise_tensor"] + calls["_qconv2d_pointwise_binary_tensor"] > 0, calls
    assert not calls["mkldnn__convolution_pointwise"], calls
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
    bf16 = _model().to(torch.bfloat16)
    quantize_int8(bf16, calibration[:2], progress=False)
    assert next(bf16.parameters()).dtype == torch.bfloat16  # the caller's model is left as it was


def test_quantize_cli_refuses_a_wrong_output_name(tmp_path, capsys):
    from splitattn.cli import main

    assert main(["quantize", "resnest14", "--output", str(tmp_path / "r14.onnx")]) == 2
    assert "an AOTInductor package is NAME.pt2: name the output r14.pt2" in capsys.readouterr().err

"""int8 export (`splitattn export --int8`): an ONNX Runtime QDQ file and an OpenVINO IR quantized by NNCF, each
proved quantized (the file and the runtime's compiled graph) and compared with PyTorch fp32.

Calibration is on the 4 shipped sample photos; the comparison is on the 20 foolbox ImageNet photos, held out.
The model is resnest14 with randomised weights and BN statistics (`randomize_`): its logits spread over tens, so
their cosine similarity to fp32 measures the quantization error. Observed over three random models, both
runtimes: correct calibration gives top-1 agreement 19-20/20, mean cosine >= 0.996 and min >= 0.958 (one held-out
photo outside the 4 photos' ranges); every activation range 10× too narrow (calibrated on images × 0.1, the
negative control below) gives top-1 agreement <= 7/20 and mean cosine <= 0.961. The thresholds sit in between."""

from __future__ import annotations

import collections
from types import SimpleNamespace

import pytest
import torch

import splitattn
from splitattn import create_model

MIN_TOP1, MEAN_COSINE, MIN_COSINE = 0.85, 0.99, 0.95  # over the 20 held-out photos; the last per photo


def _batch(paths) -> torch.Tensor:
    from splitattn.data.images import open_image

    transform = splitattn.create_transform("resnest14")  # 224×224
    return torch.stack([transform(open_image(path)) for path in paths])


@pytest.fixture(scope="module")
def photos() -> tuple[torch.Tensor, torch.Tensor]:
    """(calibration: the shipped sample photos, check: the foolbox photos)."""
    from splitattn.data.sample_photos import sample_photos
    from tests.conftest import foolbox_photos

    return _batch([photo.path for photo in sample_photos()]), _batch(foolbox_photos())


@pytest.fixture(scope="module")
def model():
    from tests.conftest import randomize_

    torch.manual_seed(0)
    return randomize_(create_model("resnest14"), seed=7)


def _agreement(model, path, fmt: str, images: torch.Tensor) -> tuple[float, float, float]:
    """(top-1 agreement, mean and lowest logit cosine similarity) of the exported file against ``model``."""
    from splitattn.export import run_exported

    with torch.inference_mode():
        expected = model(images)
    got = run_exported(path, fmt)(images)
    cosine = torch.nn.functional.cosine_similarity(got, expected)
    return float((got.argmax(1) == expected.argmax(1)).float().mean()), float(cosine.mean()), float(cosine.min())


def _assert_close_to_fp32(model, path, fmt: str, images: torch.Tensor) -> None:
    from splitattn.export import check_export

    check = check_export(model, path, fmt, images, repeats=1)
    top1, mean_cosine, min_cosine = _agreement(model, path, fmt, images)
    assert check.batch_sizes == (20, 1) and check.top1_agreement == top1
    assert check.min_cosine == pytest.approx(min_cosine, abs=1e-4)
    assert top1 >= MIN_TOP1 and mean_cosine >= MEAN_COSINE and min_cosine >= MIN_COSINE, (top1, mean_cosine,
                                                                                           min_cosine)
    assert check.max_abs_diff > 1e-3  # int8 arithmetic really ran: not the fp32 graph


def test_onnx_int8_is_quantized_and_matches_fp32(tmp_path, model, photos):
    import onnx
    import onnxruntime as ort

    from splitattn.export import ExportError, export_model
    from splitattn.export_int8 import quantize_onnx

    calibration, images = photos
    fp32 = export_model(model, tmp_path / "fp32.onnx", "onnx", 224)
    path = quantize_onnx(fp32, tmp_path / "int8.onnx", calibration)
    assert not list(tmp_path.glob("*.partial"))

    graph = onnx.load(str(path)).graph
    ops = collections.Counter(node.op_type for node in graph.node)
    convs = collections.Counter(node.op_type for node in onnx.load(str(fp32)).graph.node)["Conv"]
    assert ops["QuantizeLinear"] > 0 and ops["DequantizeLinear"] > 0
    assert sum(t.data_type == onnx.TensorProto.INT8 for t in graph.initializer) >= convs  # the conv weights
    assert path.stat().st_size < fp32.stat().st_size / 3
    options = ort.SessionOptions()  # what ONNX Runtime runs: every convolution as QLinearConv
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    runtime_ops = collections.Counter(node.op_type for node in onnx.load(options.optimized_model_filepath).graph.node)
    assert runtime_ops["QLinearConv"] == convs and runtime_ops["Conv"] == 0

    _assert_close_to_fp32(model, path, "onnx", images)
    # negative control: activation ranges 10× too narrow fail both agreement thresholds
    top1, mean_cosine, _ = _agreement(model, quantize_onnx(fp32, tmp_path / "bad.onnx", calibration * 0.1), "onnx",
                                      images)
    assert top1 < MIN_TOP1 and mean_cosine < MEAN_COSINE, (top1, mean_cosine)

    with pytest.raises(ExportError, match=r"needs a batch of images .* got \(0, 3, 224, 224\)"):
        quantize_onnx(fp32, tmp_path / "x.onnx", calibration[:0])
    with pytest.raises(ExportError, match=r"are \(1, 224, 224\) \(C, H, W\), the model takes \(3, 224, 224\)"):
        quantize_onnx(fp32, tmp_path / "x.onnx", calibration[:, :1])
    assert not (tmp_path / "x.onnx").exists()


def test_openvino_int8_is_quantized_and_matches_fp32(tmp_path, model, photos):
    import openvino as ov

    from splitattn.export import OPENVINO_CONFIG, export_model

    calibration, images = photos
    path = export_model(model, tmp_path / "r14.xml", "openvino", 224, int8=calibration)
    assert path == tmp_path / "r14.xml" and path.with_suffix(".bin").is_file()
    assert not list(tmp_path.glob("*.partial"))

    core = ov.Core()
    ir = core.read_model(str(path))
    ops = collections.Counter(op.get_type_name() for op in ir.get_ops())
    int8_constants = [op for op in ir.get_ops()
                      if op.get_type_name() == "Constant" and op.get_output_element_type(0) == ov.Type.i8]
    convs = ops["Convolution"] + ops["GroupConvolution"]
    assert ops["FakeQuantize"] > 0 and len(int8_constants) >= convs > 0  # int8 conv weights
    assert path.with_suffix(".bin").stat().st_size < 15 * 2**20  # fp32 weights are ~40 MiB
    # what OpenVINO runs, compiled as run_exported compiles it (the f32 hint): every convolution on u8/i8 data
    runtime = core.compile_model(str(path), "CPU", OPENVINO_CONFIG).get_runtime_model()
    precisions = [op.get_rt_info()["runtimePrecision"].astype(str) for op in runtime.get_ops()
                  if op.get_rt_info()["layerType"].astype(str) == "Convolution"]
    assert len(precisions) == convs and set(precisions) <= {"u8", "i8"}, precisions

    _assert_close_to_fp32(model, path, "openvino", images)


def test_export_int8_cli(tmp_path, capsys, monkeypatch):
    """`splitattn export --int8`: the -int8 name, the calibration note, and a check that claims no closeness."""
    from splitattn.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["export", "resnest14", "--format", "onnx", "--int8"]) == 0
    text = capsys.readouterr().out
    assert ("calibrating on the 4 photos shipped with splitattn (too few for a real calibration: pass --calibration "
            "DIR with a few hundred training images)" in text)
    assert "wrote resnest14-int8.onnx" in text and "onnx int8" in text and (tmp_path / "resnest14-int8.onnx").is_file()
    assert "against PyTorch fp32: top-1 agreement " in text and "not an error bound" in text
    agree = text.split("top-1 agreement ")[1].split(",")[0]
    assert agree.split("/")[1] == "4"
    assert float(text.split("logit cosine similarity >= ")[1].split(",")[0]) >= MIN_COSINE

    assert main(["export", "resnest14", "--format", "torchscript", "--int8"]) == 2
    err = capsys.readouterr().err
    assert err == ("splitattn export: error: int8 export is onnx or openvino; for PyTorch int8 use "
                   "`splitattn quantize`\n")
    assert main(["export", "resnest14", "--format", "onnx", "--calibration", str(tmp_path)]) == 2
    assert "--calibration is for --int8" in capsys.readouterr().err


def test_calibration_images_from_a_folder(tmp_path):
    """A seeded random sample of the image files under the folder (recursive; other files ignored), through the
    predictor's transform; without a folder or a training checkpoint, the shipped photos and a line saying so."""
    import shutil

    from splitattn.classification.calibration import calibration_images
    from splitattn.data.images import DatasetError
    from tests.conftest import foolbox_photos

    photos = foolbox_photos()[:3]
    (tmp_path / "b").mkdir()
    shutil.copy(photos[0], tmp_path / "b" / "z.jpg")
    shutil.copy(photos[1], tmp_path / "a.JPEG")
    shutil.copy(photos[2], tmp_path / "b" / "c.png")  # a JPEG named .png: PIL reads the content
    (tmp_path / "notes.txt").write_text("not an image")
    predictor = SimpleNamespace(transform=splitattn.create_transform("resnest14"), meta={})

    got, where = calibration_images(predictor, str(tmp_path), 2)
    assert where == f"2 random images of the 3 under {tmp_path}"
    every = _batch([photos[1], photos[2], photos[0]])  # sorted: a.JPEG, b/c.png, b/z.jpg
    index = torch.randperm(3, generator=torch.Generator().manual_seed(0))[:2]
    torch.testing.assert_close(got, every[index])
    torch.testing.assert_close(calibration_images(predictor, str(tmp_path), 2)[0], got)  # seeded: the same again
    shipped, where = calibration_images(predictor, None, 300)
    assert shipped.shape == (4, 3, 224, 224) and where.startswith("the 4 photos shipped with splitattn (too few")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no image files"):
        calibration_images(predictor, str(tmp_path / "empty"), 2)

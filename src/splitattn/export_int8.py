"""int8 post-training static quantization of our fp32 ONNX export: for ONNX Runtime (QDQ ONNX) and for OpenVINO
(an IR quantized by NNCF). Both calibrate activation ranges on real, preprocessed images.

ONNX Runtime: https://onnxruntime.ai/docs/performance/model-optimizations/quantization.html
NNCF: https://docs.openvino.ai/2025/openvino-workflow/model-optimization-guide/quantizing-models-post-training/basic-quantization-flow.html
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import torch

from .export import ExportError, check_ir_name
from .optional import require

CALIBRATION_BATCH = 8  # images per ONNX Runtime calibration run (MinMax ranges do not depend on it)


def _input_of(fp32_onnx: Path) -> tuple[str, tuple[int | str, ...]]:
    """Name and shape (dynamic dimensions as their names) of the model's only input."""
    onnx = require("onnx", "int8 export")
    graph = onnx.load(str(fp32_onnx), load_external_data=False).graph
    dims = graph.input[0].type.tensor_type.shape.dim
    return graph.input[0].name, tuple(d.dim_value if d.HasField("dim_value") else d.dim_param for d in dims)


def _checked(calibration: torch.Tensor, shape: tuple[int | str, ...]) -> torch.Tensor:
    """``calibration`` as a contiguous float32 CPU tensor, or a one-line ExportError if it cannot calibrate a model
    whose input is ``shape`` (N, C, H, W)."""
    if calibration.ndim != 4 or len(calibration) == 0:
        raise ExportError(f"int8 calibration needs a batch of images (N, C, H, W) with N >= 1, got "
                          f"{tuple(calibration.shape)}")
    wanted = tuple(shape[1:])
    if tuple(calibration.shape[1:]) != wanted:
        raise ExportError(f"int8 calibration images are {tuple(calibration.shape[1:])} (C, H, W), the model takes "
                          f"{wanted}: preprocess them with the model's eval transform")
    return calibration.detach().to("cpu", torch.float32).contiguous()


def _place(staged: Path, target: Path) -> None:
    """Copy ``staged`` beside ``target`` as TARGET.partial, then rename it into place."""
    partial = target.with_name(target.name + ".partial")
    shutil.copyfile(staged, partial)
    partial.replace(target)


def quantize_onnx(fp32_onnx: Path, output: Path, calibration: torch.Tensor) -> Path:
    """QDQ int8 ONNX for ONNX Runtime's CPU provider, from ``fp32_onnx`` calibrated (MinMax) on ``calibration``.

    ORT's documented route for x86 with VNNI: ``quant_pre_process``, then ``quantize_static`` with QDQ format,
    uint8 activations (asymmetric: ReLU outputs use the whole range), int8 weights per output channel, no
    ``reduce_range`` (VNNI does not saturate the 8-bit products)."""
    ort_quant = require("onnxruntime.quantization", "int8 ONNX export")
    fp32_onnx, output = Path(fp32_onnx), Path(output)
    name, shape = _input_of(fp32_onnx)
    images = _checked(calibration, shape)

    class Reader(ort_quant.CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(images.split(CALIBRATION_BATCH))

        def get_next(self) -> dict | None:
            batch = next(self.batches, None)
            return None if batch is None else {name: batch.numpy()}

    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="splitattn-int8-") as tmp:
        prepared, staged = Path(tmp) / "prepared.onnx", Path(tmp) / "int8.onnx"
        ort_quant.quant_pre_process(str(fp32_onnx), str(prepared))
        ort_quant.quantize_static(
            str(prepared), str(staged), Reader(), quant_format=ort_quant.QuantFormat.QDQ, per_channel=True,
            activation_type=ort_quant.QuantType.QUInt8, weight_type=ort_quant.QuantType.QInt8, reduce_range=False,
            calibrate_method=ort_quant.CalibrationMethod.MinMax)
        _place(staged, output)
    return output


def quantize_openvino(fp32_onnx: Path, output_xml: Path, calibration: torch.Tensor) -> Path:
    """int8 OpenVINO IR (NAME.xml + NAME.bin) from ``fp32_onnx``: ``nncf.quantize`` calibrated on
    ``calibration``, one image per statistics step (NNCF's advice: batchwise statistics can be inaccurate).

    NNCF's defaults for a CNN: PERFORMANCE preset (symmetric int8 weights and activations; ResNeSt's activations
    are ReLU), no model_type, fast bias correction; float parts of the IR are kept fp32."""
    ov = require("openvino", "int8 OpenVINO export")
    nncf = require("nncf", "int8 OpenVINO export")
    fp32_onnx, output_xml = Path(fp32_onnx), Path(output_xml)
    check_ir_name(output_xml)
    images = _checked(calibration, _input_of(fp32_onnx)[1])
    model = ov.convert_model(str(fp32_onnx))
    dataset = nncf.Dataset([image.unsqueeze(0).numpy() for image in images])
    quantized = nncf.quantize(model, dataset, preset=nncf.QuantizationPreset.PERFORMANCE, subset_size=len(images))
    output_xml.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="splitattn-int8-ov-") as tmp:
        staged = Path(tmp) / "model.xml"
        ov.save_model(quantized, str(staged), compress_to_fp16=False)
        for suffix in (".bin", ".xml"):  # the .xml last: it names a complete IR only once its weights are there
            _place(staged.with_suffix(suffix), output_xml.with_suffix(suffix))
    return output_xml

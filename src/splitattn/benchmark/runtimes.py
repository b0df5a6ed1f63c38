"""The inference engines a CPU deployment would pick instead of PyTorch: ONNX Runtime and OpenVINO, run on the
ONNX file ``splitattn export`` writes for the same model and weights, as callables the bench times beside ours.

Each engine gets the threads PyTorch has (``torch.get_num_threads()``), so the ratios compare like with like.
ONNX Runtime has no bf16 convolutions on the CPU, so it has fp32 and int8 rows; OpenVINO runs bf16 through its
``INFERENCE_PRECISION_HINT`` (its default on CPUs with bf16 instructions). Their int8 rows run the files
``splitattn export --int8`` writes (ONNX Runtime's QDQ quantizer, NNCF), calibrated on the bench's images.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..optional import available, require

RUNTIMES = ("onnxruntime", "openvino")
DTYPES = {"onnxruntime": ("fp32", "int8"), "openvino": ("fp32", "bf16", "int8")}
EXTRAS = {"onnxruntime": "export", "openvino": "openvino"}


@dataclass
class RuntimeModel:
    """A compiled engine for one batch size: ``run(images)`` returns the logits as a tensor."""

    name: str
    dtype: str
    run: Callable[[torch.Tensor], torch.Tensor]

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.run(images)


def missing_runtimes(runtimes: tuple[str, ...]) -> dict[str, str]:
    """The runtimes that are not installed, each with a note naming the extra that installs it."""
    return {name: f"{name} is not installed, so it has no rows: pip install 'splitattn[{EXTRAS[name]}]'"
            for name in runtimes if not available(name)}


def export_onnx(model: nn.Module, image_size: int, folder: str | Path | None = None) -> Path:
    """``model`` (fp32, eval) as the ONNX file ``splitattn export`` writes (dynamic batch)."""
    from ..export import export_model

    folder = Path(folder or tempfile.mkdtemp(prefix="splitattn-bench-"))
    return export_model(model.float().eval(), folder / "model.onnx", "onnx", image_size)


def _numpy(images: torch.Tensor):
    return images.float().contiguous().numpy()  # NCHW float32: what the exported graph takes


def onnxruntime_model(onnx_path: Path, dtype: str = "fp32") -> RuntimeModel:
    ort = require("onnxruntime", "the ONNX Runtime rows of the bench")
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return RuntimeModel("onnxruntime", dtype,
                        lambda images: torch.from_numpy(session.run(None, {name: _numpy(images)})[0]))


def openvino_model(onnx_path: Path, batch: int, image_size: int, dtype: str = "fp32") -> RuntimeModel:
    """OpenVINO compiled for a static ``batch`` (its fastest form), in ``dtype``: 'fp32' or 'bf16' (the precision
    hint), or 'int8' (an NNCF-quantized IR, with OpenVINO's own choice for the layers left in float)."""
    ov = require("openvino", "the OpenVINO rows of the bench")
    core = ov.Core()
    network = core.read_model(str(onnx_path))
    network.reshape({network.inputs[0]: [batch, 3, image_size, image_size]})
    config = {"INFERENCE_NUM_THREADS": torch.get_num_threads(), "PERFORMANCE_HINT": "LATENCY"}
    if dtype != "int8":  # int8: OpenVINO's own choice for the layers NNCF left in float (bf16 on this CPU)
        config["INFERENCE_PRECISION_HINT"] = {"fp32": "f32", "bf16": "bf16"}[dtype]
    compiled = core.compile_model(network, "CPU", config)
    request = compiled.create_infer_request()

    def run(images: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(request.infer({0: _numpy(images)})[compiled.outputs[0]].copy())

    return RuntimeModel("openvino", dtype, run)


def int8_files(onnx_path: Path, runtimes: tuple[str, ...], calibration: torch.Tensor) -> dict[str, Path]:
    """Each runtime's int8 file quantized from ``onnx_path`` on ``calibration``, written beside it."""
    from ..export_int8 import quantize_onnx, quantize_openvino

    files = {}
    if "onnxruntime" in runtimes:
        files["onnxruntime"] = quantize_onnx(onnx_path, onnx_path.with_name("model-int8.onnx"), calibration)
    if "openvino" in runtimes:
        files["openvino"] = quantize_openvino(onnx_path, onnx_path.with_name("model-int8.xml"), calibration)
    return files


def runtime_models(files: dict[str, Path], dtype: str, batch: int, image_size: int) -> dict[str, RuntimeModel]:
    """The runtimes in ``files`` (name → the ONNX / IR file for ``dtype``) that offer ``dtype``, compiled for
    ``batch``."""
    models = {}
    for name, path in files.items():
        if not available(name) or dtype not in DTYPES[name]:
            continue
        models[name] = (onnxruntime_model(path, dtype) if name == "onnxruntime"
                        else openvino_model(path, batch, image_size, dtype))
    return models

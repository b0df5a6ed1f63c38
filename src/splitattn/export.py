"""Export to ONNX, OpenVINO IR or TorchScript with a dynamic batch (ONNX and OpenVINO also int8, see
:mod:`.export_int8`), then prove the file: run it (onnxruntime / OpenVINO / torch.jit) on real images and compare
with PyTorch."""

from __future__ import annotations

import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .optional import require

FORMATS = ("onnx", "openvino", "torchscript")
SUFFIXES = {"onnx": ".onnx", "openvino": ".xml", "torchscript": ".pt"}  # OpenVINO IR: NAME.xml + NAME.bin
MIN_OPSET, MAX_OPSET = 18, 23  # what torch.onnx's exporter (torch.export based) writes
INT8_FORMATS = ("onnx", "openvino")
# OpenVINO's CPU plugin runs float layers in bf16 where the CPU has it unless told f32. The hint leaves an int8 IR's
# quantized convolutions int8 (they run as u8 kernels either way); only the layers left in float stay f32.
OPENVINO_CONFIG = {"INFERENCE_PRECISION_HINT": "f32"}


class ExportError(ValueError):
    """The export cannot be done as asked."""


@dataclass
class ExportCheck:
    path: Path
    batch_sizes: tuple[int, ...]
    max_abs_diff: float
    max_rel_diff: float
    images_per_s: float
    top1_agreement: float  # fraction of the images whose top-1 class is PyTorch's
    min_cosine: float  # the lowest cosine similarity between an image's logits and PyTorch's


def check_int8_format(fmt: str) -> None:
    if fmt not in INT8_FORMATS:
        raise ExportError("int8 export is onnx or openvino; for PyTorch int8 use `splitattn quantize`")


def check_ir_name(path: Path) -> None:
    if path.suffix != ".xml":
        raise ExportError(f"an OpenVINO IR is NAME.xml + NAME.bin: name the output {path.with_suffix('.xml').name}")


def export_model(model: nn.Module, path: str | Path, fmt: str, image_size: int, opset: int = 18,
                 int8: torch.Tensor | None = None) -> Path:
    """Write ``model`` (eval mode) to ``path`` as ``fmt`` with a dynamic batch dimension; with ``int8`` (real,
    preprocessed calibration images, (N, C, H, W)) an int8 ONNX or OpenVINO IR quantized from the fp32 ONNX."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}: choose from {', '.join(FORMATS)}")
    path = Path(path)
    if int8 is not None:
        return _export_int8(model, path, fmt, image_size, opset, int8)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    example = torch.randn(2, getattr(model, "in_chans", 3), image_size, image_size)
    partial = path.with_name(path.name + ".partial")
    if fmt == "torchscript":
        scripted = torch.jit.script(model)
        torch.jit.save(scripted, str(partial))
    elif fmt == "openvino":
        return _export_openvino(model, path, image_size, opset)
    else:
        if not MIN_OPSET <= opset <= MAX_OPSET:
            raise ExportError(f"opset {opset} is out of reach: torch.onnx writes opsets {MIN_OPSET}-{MAX_OPSET} "
                              f"(use --opset {MIN_OPSET}, or convert the file afterwards with onnx.version_converter)")
        require("onnx", "ONNX export")
        require("onnxscript", "ONNX export")
        batch = torch.export.Dim("batch", min=1, max=4096)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(model, (example,), dynamic_shapes=({0: batch},), opset_version=opset,
                                        dynamo=True, verbose=False)
        program.save(str(partial))
    partial.replace(path)  # no half-written file under the final name
    return path


def _export_int8(model: nn.Module, path: Path, fmt: str, image_size: int, opset: int,
                 calibration: torch.Tensor) -> Path:
    """The fp32 ONNX in a temporary folder, quantized from there into ``path``."""
    check_int8_format(fmt)
    from .export_int8 import quantize_onnx, quantize_openvino

    if fmt == "openvino":
        check_ir_name(path)
    for module in ("onnxruntime",) if fmt == "onnx" else ("openvino", "nncf"):  # missing: fail before the export
        require(module, f"int8 {fmt} export")
    with tempfile.TemporaryDirectory(prefix="splitattn-fp32-") as tmp:
        fp32 = export_model(model, Path(tmp) / "model.onnx", "onnx", image_size, opset)
        quantize = quantize_onnx if fmt == "onnx" else quantize_openvino
        return quantize(fp32, path, calibration)


def _export_openvino(model: nn.Module, path: Path, image_size: int, opset: int) -> Path:
    """OpenVINO IR (``path`` = NAME.xml, weights in NAME.bin) converted from our ONNX export, fp32 weights; both
    files are written beside the target under temporary names and renamed into place."""
    ov = require("openvino", "OpenVINO export")
    check_ir_name(path)
    with tempfile.TemporaryDirectory(prefix="splitattn-ov-") as tmp:
        onnx_path = export_model(model, Path(tmp) / "model.onnx", "onnx", image_size, opset)
        staged = Path(tmp) / "model.xml"
        ov.save_model(ov.convert_model(str(onnx_path)), str(staged), compress_to_fp16=False)
        for suffix in (".bin", ".xml"):  # the .xml last: it names a complete IR only once its weights are there
            partial = path.with_name(path.stem + suffix + ".partial")
            shutil.copyfile(staged.with_suffix(suffix), partial)
            partial.replace(path.with_suffix(suffix))
    return path


def run_exported(path: Path, fmt: str):
    """A callable ``images (N,C,H,W) float32 -> logits tensor`` backed by the exported file."""
    if fmt == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # "torch.jit is deprecated": still the TorchScript loader
            loaded = torch.jit.load(str(path)).eval()

        def run(images: torch.Tensor) -> torch.Tensor:
            with torch.inference_mode():
                return loaded(images)
        return run
    if fmt == "openvino":
        ov = require("openvino", "checking the OpenVINO IR")
        compiled = ov.Core().compile_model(str(path), "CPU", OPENVINO_CONFIG)

        def run(images: torch.Tensor) -> torch.Tensor:
            return torch.from_numpy(compiled(images.contiguous().numpy())[compiled.outputs[0]].copy())
        return run
    ort = require("onnxruntime", "checking the ONNX file")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def run(images: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {name: images.numpy()})[0])
    return run


def check_export(model: nn.Module, path: Path, fmt: str, images: torch.Tensor, repeats: int = 3) -> ExportCheck:
    """Outputs of the exported file against ``model`` on ``images`` and on their first row (two batch
    sizes: the batch dimension must really be dynamic), top-1 agreement and the lowest logit cosine similarity on
    ``images``, and the exported model's images per second."""
    run = run_exported(path, fmt)
    abs_diff = rel_diff = 0.0
    top1 = cosine = 0.0
    sizes = (len(images), 1) if len(images) > 1 else (1,)
    for size in sizes:
        batch = images[:size]
        with torch.inference_mode():
            expected = model(batch)
        got = run(batch)
        if got.shape != expected.shape:
            raise ExportError(f"the exported model returned {tuple(got.shape)} for batch {size}, "
                              f"PyTorch {tuple(expected.shape)}")
        diff = float((got - expected).abs().max())
        abs_diff = max(abs_diff, diff)
        rel_diff = max(rel_diff, diff / max(float(expected.abs().max()), 1e-12))
        if size == len(images):
            top1 = float((got.argmax(-1) == expected.argmax(-1)).float().mean())
            cosine = float(torch.nn.functional.cosine_similarity(got.flatten(1), expected.flatten(1)).min())
    run(images)  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        run(images)
    rate = repeats * len(images) / (time.perf_counter() - start)
    return ExportCheck(path, sizes, abs_diff, rel_diff, rate, top1, cosine)

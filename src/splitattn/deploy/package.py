"""The fastest CPU form of a model in one call, compiled ahead of time and cached on disk.

``optimize(model, example, dtype)`` builds the form that is fastest on the CPU for each precision:

- fp32 / bf16: ``deploy()`` (folded norms, fused split attention, NHWC), cast to ``dtype``;
- int8: ``quantize_int8()`` (PT2E, X86 Inductor quantizer) on calibration images;

then ``torch.export`` and AOTInductor (``torch._inductor.aoti_compile_and_package``, inductor with frozen weights,
https://docs.pytorch.org/docs/stable/torch.compiler_aot_inductor.html) compile it to a ``.pt2`` package: a shared
library with the weights inside. The package is written once under a key of everything that decides its
contents (weights, dtype, example shape, calibration images, torch version, CPU instruction set), so a second
call, in this process or another, loads it in well under a second instead of compiling for half a minute or more.

Loading a package also sets glibc's malloc thresholds for the process (``splitattn.allocator``): without
them each call of a ResNeSt-50 at batch 16 page-faults ~50,000 fresh pages for its activations (glibc returns
large freed blocks to the OS), 10-25 % of an fp32 or int8 call on a 2-core CPU. ``keep_freed_memory=False`` leaves
malloc alone.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..allocator import keep_freed_memory as _keep_freed_memory
from .blocks import DeployError
from .convert import deploy
from .quantize import QuantizeError, calibration_batches, quantize_int8

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "int8": torch.float32}  # int8 graphs take fp32 images


@dataclass
class CompiledModel:
    """An AOTInductor package, loaded: call it with (N, C, H, W) float images of the shape it was compiled for."""

    path: Path
    dtype: str
    input_shape: tuple[int, ...]  # batch dimension -1 where it is dynamic
    compile_seconds: float  # 0.0 when the package came from the cache
    load_seconds: float
    from_cache: bool
    runner: object
    meta: dict = field(default_factory=dict)

    def __call__(self, images: torch.Tensor):
        expected = self.input_shape
        if images.dim() != 4 or any(e not in (-1, g) for e, g in zip(expected, images.shape)):
            raise ValueError(f"{self.path.name} was compiled for images of shape {expected} (-1: any batch), got "
                             f"{tuple(images.shape)}: call optimize() again with that example, or dynamic_batch=True")
        images = images.to(DTYPES[self.dtype]).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            return self.runner(images)


def compiled_cache_dir() -> Path:
    """``$SPLITATTN_HOME/compiled``, else ``<torch hub dir>/splitattn/compiled``."""
    home = os.environ.get("SPLITATTN_HOME")
    root = Path(home).expanduser() if home else Path(torch.hub.get_dir()) / "splitattn"
    return root / "compiled"


def _cpu_isa() -> str:
    from torch._inductor.cpu_vec_isa import pick_vec_isa

    return str(pick_vec_isa())  # the generated code is specialised to it (e.g. avx512)


def _structure(model: nn.Module) -> str:
    """The module tree and each module's plain settings (``out_indices``, ``output_stride``, …): what decides the
    graph besides the weights (``avd_first`` and dilations show in the tree itself)."""
    parts = [repr(model)]
    for name, module in model.named_modules():
        plain = {k: v for k, v in vars(module).items()
                 if not k.startswith("_") and k != "training" and isinstance(v, (bool, int, float, str, tuple, list))}
        parts.append(f"{name}: {sorted(plain.items())!r}")
    return "\n".join(parts)


def _fingerprint(model: nn.Module, dtype: str, shape: tuple[int, ...], calibration: torch.Tensor | None) -> str:
    from .. import __version__

    digest = hashlib.sha256()
    digest.update(json.dumps([dtype, list(shape), __version__, torch.__version__, _cpu_isa()]).encode())
    digest.update(_structure(model).encode())
    for name, tensor in model.state_dict().items():
        digest.update(f"{name} {tuple(tensor.shape)} {tensor.dtype}".encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    if calibration is not None:
        digest.update(calibration.numpy().tobytes())
    return digest.hexdigest()[:24]


def _inference_form(model: nn.Module, dtype: str, calibration: torch.Tensor | None, progress: bool) -> nn.Module:
    if dtype == "int8":
        if calibration is None:
            raise QuantizeError("int8 needs calibration images: optimize(..., calibration=IMAGES), a few hundred "
                                "preprocessed training images")
        return quantize_int8(model, calibration, progress=progress)
    try:
        form = deploy(model)
    except DeployError:  # e.g. deformable convolutions: the plain model (a copy), still compiled with frozen weights
        form = copy.deepcopy(model)
    return form.to(DTYPES[dtype]).to(memory_format=torch.channels_last)


def optimize(model: nn.Module, example: torch.Tensor, dtype: str = "fp32", calibration: torch.Tensor | None = None,
             dynamic_batch: bool = False, package: str | Path | None = None, progress: bool = True,
             meta: dict | None = None, keep_freed_memory: bool = True) -> CompiledModel:
    """``model`` (eval mode) in its fastest CPU form for ``dtype`` ('fp32', 'bf16' or 'int8'), compiled for
    images shaped like ``example`` (any batch if ``dynamic_batch``), as a loaded AOTInductor package.

    ``package``: where to write the ``.pt2`` (default: the compiled cache, keyed by weights, dtype, shape,
    calibration, torch version and CPU instruction set); an existing package with the same key is loaded, not
    rebuilt, and one with another key is replaced. Compile time (20-40 s for a ResNeSt-50 on 2 cores) is paid
    once and reported in ``compile_seconds``. ``calibration`` (int8): a tensor of preprocessed images or an
    iterable of batches, as :func:`quantize_int8` takes. ``meta``: extra JSON-able facts (classes, source)
    stored beside the package. ``keep_freed_memory``: see the module docstring."""
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}: choose from {', '.join(DTYPES)}")
    if model.training:
        raise ValueError("optimize() builds an inference form: call model.eval() first")
    shape = (-1, *example.shape[1:]) if dynamic_batch else tuple(example.shape)
    if dtype == "int8" and calibration is not None:  # one tensor, so that it can be part of the key
        calibration = torch.cat(calibration_batches(calibration, 32)).detach().to("cpu", torch.float32).contiguous()
    key = _fingerprint(model, dtype, shape, calibration if dtype == "int8" else None)
    path = Path(package) if package is not None else compiled_cache_dir() / f"{dtype}-{key}.pt2"
    meta_path = path.with_suffix(".json")
    stored = _read_meta(meta_path) if meta_path.is_file() and path.is_file() else {}
    compile_seconds, from_cache = 0.0, stored.get("key") == key
    if not from_cache:
        start = time.perf_counter()
        form = _inference_form(model.eval(), dtype, calibration, progress)
        if dynamic_batch and len(example) < 2:  # export would specialise a batch of one to the constant 1
            example = example.expand(2, *example.shape[1:])
        staged = example.to(DTYPES[dtype]).contiguous(memory_format=torch.channels_last)
        dynamic = ({0: torch.export.Dim("batch", min=1, max=4096)},) if dynamic_batch else None
        # freezing must be set globally: inductor's int8 (oneDNN) patterns check the global config, not the
        # per-call inductor_configs, and without them the package runs the quantize/dequantize graph in fp32
        with torch.no_grad(), torch._inductor.config.patch(freezing=True):
            program = torch.export.export(form, (staged,), dynamic_shapes=dynamic)
            path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=path.parent, prefix=".compiling-") as tmp:
                staged_path = Path(tmp) / path.name
                torch._inductor.aoti_compile_and_package(program, package_path=str(staged_path))
                staged_path.replace(path)  # never a half-written package under the final name
        compile_seconds = time.perf_counter() - start
        partial = meta_path.with_name(meta_path.name + ".partial")
        partial.write_text(json.dumps({**(meta or {}), "key": key, "dtype": dtype, "input_shape": list(shape),
                                       "compile_seconds": round(compile_seconds, 1), "torch": torch.__version__,
                                       "cpu_isa": _cpu_isa()}, indent=1))
        partial.replace(meta_path)
    loaded = load_package(path, keep_freed_memory)
    loaded.compile_seconds, loaded.from_cache = compile_seconds, from_cache
    return loaded


def _read_meta(meta_path: Path) -> dict:
    try:
        meta = json.loads(meta_path.read_text())
        if not {"key", "dtype", "input_shape"} <= set(meta):
            raise ValueError
    except ValueError:  # json.JSONDecodeError is one
        raise ValueError(f"{meta_path} is not a package's facts file (key, dtype, input_shape): write the package "
                         "again with splitattn.deploy.optimize() or `splitattn quantize`") from None
    return meta


def load_package(path: str | Path, keep_freed_memory: bool = True) -> CompiledModel:
    """A package written by :func:`optimize` (or ``splitattn quantize``), with the facts stored beside it.
    ``keep_freed_memory``: see the module docstring."""
    path = Path(path)
    meta_path = path.with_suffix(".json")
    if not path.is_file() or not meta_path.is_file():
        raise FileNotFoundError(f"{path} (and {meta_path.name} beside it) not found: write it with "
                                "splitattn.deploy.optimize() or `splitattn quantize`")
    meta = _read_meta(meta_path)
    if meta.get("torch") != torch.__version__ or meta.get("cpu_isa") != _cpu_isa():
        raise RuntimeError(f"{path.name} was compiled by torch {meta.get('torch')} for {meta.get('cpu_isa')}; this is "
                           f"torch {torch.__version__} on {_cpu_isa()}: compile it again here")
    if keep_freed_memory:
        _keep_freed_memory()
    start = time.perf_counter()
    runner = torch._inductor.aoti_load_package(str(path))
    return CompiledModel(path, meta["dtype"], tuple(meta["input_shape"]), 0.0, time.perf_counter() - start, True,
                         runner, meta)

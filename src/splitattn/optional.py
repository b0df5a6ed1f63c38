"""Optional dependencies: each sits behind a pip extra, and a missing one is an error that names the extra.

The core (layers, models, deploy, transforms) needs torch, torchvision, numpy, pillow, tqdm and pyyaml only.
"""

from __future__ import annotations

import importlib
from types import ModuleType

# import name → (PyPI package, splitattn extra that installs it)
PACKAGES = {
    "matplotlib": ("matplotlib", "plots"),
    "pycocotools": ("pycocotools", "det"),
    "onnx": ("onnx", "export"),
    "onnxscript": ("onnxscript", "export"),
    "onnxruntime": ("onnxruntime", "export"),
    "torch.utils.tensorboard": ("tensorboard", "train"),
    "timm": ("timm", "bench"),
    "safetensors": ("safetensors", "hub"),
    "huggingface_hub": ("huggingface_hub", "hub"),
    "openvino": ("openvino", "openvino"),
    "nncf": ("nncf", "openvino"),
    "torchao": ("torchao", "quantize"),
}


class MissingDependency(ImportError):
    """An optional package is not installed; the message names the pip extra that installs it."""


def require(module: str, purpose: str) -> ModuleType:
    """Import ``module`` (a key of :data:`PACKAGES`) or raise :class:`MissingDependency` saying how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        package, extra = PACKAGES.get(module) or PACKAGES[module.split(".")[0]]
        raise MissingDependency(f"{purpose} needs {package}, which is not installed: "
                                f"pip install 'splitattn[{extra}]' (or pip install {package})") from None


def available(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True

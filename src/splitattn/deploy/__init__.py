"""Inference form: ``splitattn.deploy(model)`` folds every norm, fuses activations and residual adds,
and computes split attention in as few passes as it can; outputs equal the trained model's. ``optimize(model,
example, dtype)`` is the fastest CPU form in one call (deploy or int8, compiled ahead of time and cached)."""

from .blocks import DeployBottleneck, DeployError, DeploySplitAttention
from .compile import compile_for_inference
from .convert import deploy
from .fused_conv import ConvAct
from .package import CompiledModel, load_package, optimize
from .quantize import QuantizeError, quantize_int8

__all__ = ["CompiledModel", "ConvAct", "DeployBottleneck", "DeployError", "DeploySplitAttention", "QuantizeError",
           "compile_for_inference", "deploy", "load_package", "optimize", "quantize_int8"]

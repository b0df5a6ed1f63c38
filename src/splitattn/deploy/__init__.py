"""Inference form: ``splitattn.deploy(model)`` folds every norm, fuses activations and residual adds,
and computes split attention in as few passes as it can; outputs equal the trained model's."""

from .blocks import DeployBottleneck, DeployError, DeploySplitAttention
from .compile import compile_for_inference
from .convert import deploy
from .fused_conv import ConvAct

__all__ = ["ConvAct", "DeployBottleneck", "DeployError", "DeploySplitAttention", "compile_for_inference", "deploy"]

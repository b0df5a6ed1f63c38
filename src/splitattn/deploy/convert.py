"""``deploy(model)``: the trained network rewritten into its inference form."""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..models.resnest import Bottleneck, ResNeSt
from .blocks import DeployBottleneck, DeployError, fold


class ToChannelsLast(nn.Module):
    """NHWC from the first layer on: oneDNN's fastest CPU convolutions, and no layout flip per block."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last)


def _check(model: nn.Module) -> None:
    if model.training:
        raise DeployError("deploy() folds BatchNorm's running statistics, so it needs a model in eval mode: "
                          "call model.eval() first (deploy is for inference; keep the original for training)")
    stray = sorted({type(m).__name__ for m in model.modules()
                    if isinstance(m, (nn.ReLU6, nn.GELU, nn.SiLU, nn.LeakyReLU, nn.PReLU))})
    if stray:
        raise DeployError(f"deploy() fuses ReLU only; this model uses {', '.join(stray)}")
    if not any(isinstance(m, (ResNeSt, Bottleneck)) for m in model.modules()):
        raise DeployError(f"deploy() rewrites ResNeSt networks and found none inside {type(model).__name__}")
    if any(isinstance(m, Bottleneck) and m.conv2_offset is not None for m in model.modules()):
        raise DeployError("deploy() folds plain convolutions; this model has deformable convs (deform_stages): "
                          "run it as it is, in eval mode")


def _deploy_stem(net: ResNeSt, channels_last: bool) -> None:
    conv_a, norm_a, _, conv_b, norm_b, _, conv_c = net.conv1
    stem = [fold(conv_a, norm_a, relu=True), fold(conv_b, norm_b, relu=True), fold(conv_c, net.bn1, relu=True)]
    net.conv1 = nn.Sequential(*([ToChannelsLast()] if channels_last else []), *stem)
    net.bn1, net.act1 = nn.Identity(), nn.Identity()


def _replace_blocks(module: nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, Bottleneck):
            setattr(module, name, DeployBottleneck(child))
        else:
            _replace_blocks(child)


@torch.no_grad()
def deploy(model: nn.Module, channels_last: bool = True, inplace: bool = False) -> nn.Module:
    """The inference form of ``model`` (a ResNeSt, a ``features_only`` backbone, or any module holding them).

    Every norm is folded into the convolution before it (stem, conv1/conv3, the split conv's bn0,
    fc1+bn1, shortcuts), ReLUs and the residual add are fused into the convolutions, split attention
    runs in three passes over the feature map, and (``channels_last``) the network works in NHWC from
    the first convolution on. Outputs equal the original's to float rounding. The result is for
    inference only: its parameters do not train.

    Args:
        model: in eval mode.
        channels_last: convert the input to NHWC at the stem (the fast layout for oneDNN and cuDNN).
        inplace: rewrite ``model`` itself instead of a copy.
    """
    _check(model)
    model = model if inplace else copy.deepcopy(model)
    for net in [m for m in model.modules() if isinstance(m, ResNeSt)]:
        _deploy_stem(net, channels_last)
    _replace_blocks(model)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model.eval()

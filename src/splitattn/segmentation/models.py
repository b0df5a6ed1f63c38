"""``create_segmenter``: DeepLabV3 or FCN on a dilated ResNeSt, with the auxiliary FCN head on layer3.

As the paper's segmentation runs (PyTorch-Encoding ``encoding/models/sseg/{deeplab,fcn}.py``,
paper-facts §8.2): the backbone keeps the official dilation semantics (OS 8: layer3 dilation 2,
layer4 dilation 4 with first-block dilation 2 and stride-1 avd pools — what the checkpoints were
fine-tuned with, unlike timm's), the DeepLabV3 head is ASPP (1×1, three 3×3 atrous convs at rates
12/24/36 for OS 8 and 6/12/18 for OS 16, image pooling; 256 channels, BN/ReLU, concat → 1×1 → BN/ReLU
→ dropout 0.5) then 3×3 conv 256 → BN/ReLU → dropout 0.1 → 1×1 classifier; FCN's head and the
auxiliary head are the FCN head (3×3 conv to in/4 channels, BN/ReLU, dropout 0.1, 1×1). Logits are
upsampled bilinearly (align_corners=True, as Encoding) to the input size. The model normalises its
[0, 1] RGB input with the ImageNet mean/std itself, so data, predict and export need no transform.
torchvision's ``ASPP`` and ``FCNHead`` are used as they are; only the DeepLab head's tail differs.

``flavour="mmseg"`` builds OpenMMLab's variants instead (mmsegmentation ``configs/_base_/models/*_r50-d8.py`` with
its ResNeSt backbone): no stride-1 avd pool in the first block of a dilated stage, the heads of
:mod:`.mmseg_heads` (512 channels; FCN with two convs and ``conv_cat``; PSPNet's pyramid pooling; DeepLabV3+ with
separable convs), the auxiliary FCN head with one conv and 256 channels, and ``align_corners=False`` resizing.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.segmentation.deeplabv3 import ASPP
from torchvision.models.segmentation.fcn import FCNHead

from ..layers import convert_sync_batchnorm
from ..models import create_model
from .mmseg_heads import ASPPHead, DecodeHead, PSPHead, SeparableASPPHead
from .mmseg_heads import FCNHead as MMSegFCNHead

SEGMENTERS = ("deeplabv3", "deeplabv3plus", "fcn", "pspnet")
FLAVOURS = ("encoding", "mmseg")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class DeepLabV3Head(nn.Sequential):
    """ASPP then 3×3 conv → BN/ReLU → dropout 0.1 → 1×1 (Encoding's ``DeepLabV3Head``)."""

    def __init__(self, in_channels: int, num_classes: int, atrous_rates: tuple[int, int, int], channels: int = 256):
        super().__init__(
            ASPP(in_channels, atrous_rates, channels),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.Dropout(0.1),
            nn.Conv2d(channels, num_classes, 1),
        )


class DeepLabV3PlusHead(nn.Module):
    """DeepLabV3+ (Chen et al. 2018; the paper's Cityscapes model): ASPP on C5, then a decoder that
    upsamples it to the stride-4 backbone map, concatenates that map projected to 48 channels (1×1,
    BN/ReLU) and refines with two 3×3 conv → BN/ReLU before the 1×1 classifier."""

    def __init__(self, in_channels: int, low_channels: int, num_classes: int, atrous_rates: tuple[int, int, int],
                 channels: int = 256, low_projection: int = 48):
        super().__init__()
        self.aspp = ASPP(in_channels, atrous_rates, channels)
        self.project_low = nn.Sequential(nn.Conv2d(low_channels, low_projection, 1, bias=False),
                                         nn.BatchNorm2d(low_projection), nn.ReLU(inplace=True))
        self.fuse = nn.Sequential(
            nn.Conv2d(channels + low_projection, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels), nn.ReLU(inplace=True),
        )
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, c5: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
        high = F.interpolate(self.aspp(c5), size=low.shape[-2:], mode="bilinear", align_corners=True)
        return self.classifier(self.fuse(torch.cat([high, self.project_low(low)], 1)))


class Segmenter(nn.Module):
    """Backbone C4 (aux) and C5 (out) → heads → ``{"out", "aux"}`` logits at the input resolution.

    The backbone returns C2..C5; with ``low_index`` set (DeepLabV3+) the head takes ``(C5, that map)``; an
    mmseg head (:class:`~.mmseg_heads.DecodeHead`) takes the whole list. ``align_corners`` is that of the final
    upsampling (True as PyTorch-Encoding, False as mmseg).
    """

    def __init__(self, backbone: nn.Module, head: nn.Module, aux_head: nn.Module | None, num_classes: int,
                 low_index: int | None = None, align_corners: bool = True):
        super().__init__()
        self.align_corners = align_corners
        self.backbone = backbone
        self.head = head
        self.aux_head = aux_head
        self.num_classes = num_classes
        self.low_index = low_index
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        size = images.shape[-2:]
        features = self.backbone((images - self.mean) / self.std)
        result = OrderedDict()
        result["out"] = self._upsample(self._run_head(self.head, features, -1), size)
        if self.aux_head is not None:
            result["aux"] = self._upsample(self._run_head(self.aux_head, features, -2), size)
        return result

    def _run_head(self, head: nn.Module, features, index: int) -> torch.Tensor:
        if isinstance(head, DecodeHead):
            return head(features)
        if self.low_index is not None and index == -1:
            return head(features[-1], features[self.low_index])
        return head(features[index])

    def _upsample(self, logits: torch.Tensor, size) -> torch.Tensor:
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=self.align_corners)


def create_segmenter(kind: str = "deeplabv3", backbone: str = "resnest50", num_classes: int = 150, *,
                     output_stride: int = 8, aux: bool = True, pretrained_backbone: bool | str = False,
                     norm: str = "bn", head_channels: int | None = None,
                     atrous_rates: tuple[int, int, int] | None = None, flavour: str = "encoding",
                     pretrained: str | None = None, progress: bool = True, **backbone_overrides) -> Segmenter:
    """Build ``kind`` in :data:`SEGMENTERS` on a dilated zoo ``backbone``.

    Args:
        num_classes: output classes (ADE20K 150, VOC 21, Pascal Context 59, Cityscapes 19).
        output_stride: 8 (the paper's) or 16; the dilation follows the official code.
        aux: add the FCN auxiliary head on layer3 (trained with loss weight ``losses.AUX_WEIGHT``).
        pretrained_backbone: False, True (zoo ImageNet weights) or an official-layout state_dict path.
        norm: ``'bn'``, ``'syncbn'`` (the paper; :class:`splitattn.layers.SyncBatchNorm`, synchronised under
            torchrun) or ``'frozenbn'`` for the backbone; the heads use BatchNorm (synchronised too for ``'syncbn'``).
        head_channels: width of the head; None = 256 (PyTorch-Encoding's DeepLabV3) or 512 (mmseg's heads).
            A compact backbone on the CPU can use fewer (the ASPP dominates its compute).
        atrous_rates: the ASPP's three rates; None = the paper's (12, 24, 36) at OS 8, (6, 12, 18) at OS 16,
            sized for 480-px crops (60 × 60 maps): small inputs want rates in the same proportion to their map.
        flavour: ``'encoding'`` (PyTorch-Encoding's heads and the official backbone; ``pspnet`` is not one of
            its ResNeSt models) or ``'mmseg'`` (mmsegmentation's ResNeSt and heads; see the module docstring).
        pretrained: a released segmenter (``splitattn list --task segment``), or a path / URL of a whole-model
            file in PyTorch-Encoding's, mmseg's or our layout; loaded with ``strict=True``. A zoo name also
            sets ``kind``, ``backbone``, ``num_classes`` and ``flavour`` (arguments that disagree raise).
        **backbone_overrides: :func:`splitattn.create_model` arguments (e.g. ``base_planes``).
    """
    if pretrained is not None:
        from .zoo import build_pretrained  # the zoo imports this module

        return build_pretrained(pretrained, kind=kind, backbone=backbone, num_classes=num_classes,
                                flavour=flavour, output_stride=output_stride, aux=aux, norm=norm,
                                head_channels=head_channels, atrous_rates=atrous_rates, progress=progress,
                                **backbone_overrides)
    if kind not in SEGMENTERS:
        raise ValueError(f"unknown segmenter {kind!r}: use one of {', '.join(SEGMENTERS)}")
    if flavour not in FLAVOURS:
        raise ValueError(f"unknown flavour {flavour!r}: use one of {', '.join(FLAVOURS)}")
    if kind == "pspnet" and flavour != "mmseg":
        raise ValueError("pspnet is built in mmseg's layout only (the ResNeSt PSPNets are mmseg's): "
                         "pass flavour='mmseg'")
    if output_stride not in (8, 16):
        raise ValueError(f"output_stride must be 8 (the paper's) or 16 for segmentation, got {output_stride}: "
                         "the backbone dilates layer3/layer4 for these two only")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    if norm not in ("bn", "syncbn", "frozenbn"):
        raise ValueError(f"unknown norm {norm!r}: use 'bn', 'syncbn' or 'frozenbn'")
    mmseg = flavour == "mmseg"
    channels = head_channels if head_channels is not None else (512 if mmseg else 256)
    if channels < 1:
        raise ValueError(f"head_channels must be >= 1, got {head_channels}")
    if atrous_rates is not None and (len(atrous_rates) != 3 or min(atrous_rates) < 1):
        raise ValueError(f"atrous_rates must be three rates >= 1, got {atrous_rates}")
    if mmseg:
        backbone_overrides.setdefault("avd_dilated", False)
    body = create_model(backbone, pretrained=pretrained_backbone, features_only=True, out_indices=(1, 2, 3, 4),
                        output_stride=output_stride, progress=progress,
                        norm_layer="frozenbn" if norm == "frozenbn" else "bn", **backbone_overrides)
    stages = body.feature_info  # C2..C5
    # DeepLabV3+'s decoder reads the stride-4 map: C2 with the standard stem, C3 with a stride-2 stem
    low = max((i for i in (0, 1) if stages[i]["reduction"] <= 4), default=0) if kind == "deeplabv3plus" else None
    c4, c5 = stages[2]["num_chs"], stages[3]["num_chs"]
    rates = tuple(atrous_rates or ((12, 24, 36) if output_stride == 8 else (6, 12, 18)))
    if mmseg:
        head, aux_head = _mmseg_heads(kind, stages, low, num_classes, channels, rates)
        model = Segmenter(body, head, aux_head if aux else None, num_classes, align_corners=False)
    else:
        if kind == "deeplabv3":
            head = DeepLabV3Head(c5, num_classes, rates, channels)
        elif kind == "deeplabv3plus":
            head = DeepLabV3PlusHead(c5, stages[low]["num_chs"], num_classes, rates, channels)
        else:
            head = FCNHead(c5, num_classes)
        model = Segmenter(body, head, FCNHead(c4, num_classes) if aux else None, num_classes, low_index=low)
    if norm == "syncbn":
        convert_sync_batchnorm(model, torch.device("cpu"))  # heads too; the engine swaps torch's in on GPUs
    model.kind, model.output_stride, model.flavour = kind, output_stride, flavour
    return model


def _mmseg_heads(kind: str, stages: list[dict], low: int | None, num_classes: int, channels: int,
                 rates: tuple[int, ...]) -> tuple[DecodeHead, DecodeHead]:
    """The decode head and the auxiliary FCN head (1 conv, 256 channels, on C4) of mmseg's ``*_r50-d8`` configs."""
    c5 = stages[3]["num_chs"]
    if kind == "deeplabv3":
        head = ASPPHead(c5, num_classes, channels, (1, *rates))
    elif kind == "deeplabv3plus":
        head = SeparableASPPHead(c5, stages[low]["num_chs"], num_classes, channels, dilations=(1, *rates),
                                 c1_index=low)
    elif kind == "pspnet":
        head = PSPHead(c5, num_classes, channels)
    else:
        head = MMSegFCNHead(c5, num_classes, channels, num_convs=2, concat_input=True)
    aux = MMSegFCNHead(stages[2]["num_chs"], num_classes, max(channels // 2, 1), num_convs=1,
                       concat_input=False, in_index=2)
    return head, aux

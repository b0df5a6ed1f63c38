"""Whole-detector checkpoints (detectron2 + the official ResNeSt plug-in, mmdetection) → our detectron2 flavour.

Our detectors (``create_detector(..., flavour='detectron2')``) keep detectron2's names for the RPN and RoI
heads (``proposal_generator.*``, ``roi_heads.*``), so only the backbone (official ResNeSt names under
``backbone.body``, via :func:`splitattn.models.key_converters.to_official`) and the FPN (torchvision's
``FeaturePyramidNetwork`` under ``backbone.fpn``) are renamed. Upstream names: facebookresearch/detectron2
``detectron2/modeling/backbone/fpn.py`` (``fpn_lateral{2..5}``, ``fpn_output{2..5}``, each a ``Conv2d`` with a
``norm`` child). mmdetection's names: open-mmlab/mmdetection ``mmdet/models/necks/fpn.py`` (``lateral_convs``,
``fpn_convs``: ``ConvModule`` with ``conv`` / ``bn``), ``dense_heads/rpn_head.py`` (``rpn_conv``, ``rpn_cls``,
``rpn_reg``), ``roi_heads/bbox_heads/convfc_bbox_head.py`` (``shared_convs``, ``shared_fcs``, ``fc_cls`` with
background last, ``fc_reg``) and ``roi_heads/mask_heads/fcn_mask_head.py`` (``convs``, ``upsample``,
``conv_logits``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

import torch

from ..models.key_converters import DROP, unwrap_state_dict, whole_model_to_official
from ..models.weights import atomic_save, read_checkpoint_file

_D2_FPN = re.compile(r"backbone\.fpn_(lateral|output)([2-5])\.(weight|bias|norm\.(.+))")
# buffers older detectron2 versions saved, which the model computes itself
_D2_DERIVED = ("pixel_mean", "pixel_std")


def _fpn_key(match: re.Match) -> str:
    kind, level, tensor, norm_tensor = match.groups()
    block = "inner_blocks" if kind == "lateral" else "layer_blocks"
    where = f"1.{norm_tensor}" if norm_tensor else f"0.{tensor}"
    return f"backbone.fpn.{block}.{int(level) - 2}.{where}"


def _whole_detector(sd: dict[str, torch.Tensor], layout: str, backbone_prefix: str, rename, notes: list[str]):
    return whole_model_to_official(sd, layout, backbone_prefix, "backbone.body.", rename, notes,
                                   "a splitattn detector", "the detector holds the 0-255 image mean/std itself")


def _detectron2_key(key: str):
    if key in _D2_DERIVED:
        return DROP
    if match := _D2_FPN.fullmatch(key):
        return _fpn_key(match)
    return key if key.startswith(("proposal_generator.", "roi_heads.", "sem_seg_head.")) else None


def from_detectron2(checkpoint: Mapping) -> tuple[dict[str, torch.Tensor], list[str]]:
    """A detectron2 ResNeSt R-CNN state_dict (or its checkpoint dict) → our detector's names, with notes.

    Raises ValueError naming the keys when the file is not a detectron2 FPN detector.
    """
    notes: list[str] = []
    sd = unwrap_state_dict(checkpoint, notes)
    if not any(k.startswith("backbone.bottom_up.") for k in sd):
        raise ValueError("not a detectron2 FPN detector: no 'backbone.bottom_up.' keys (a backbone-only file "
                         "goes to create_detector(pretrained_backbone=...) after 'splitattn convert')")
    return _whole_detector(sd, "detectron2", "backbone.bottom_up.", _detectron2_key, notes)


_MMDET_RULES = [
    (re.compile(r"neck\.lateral_convs\.(\d)\.conv\.(.+)"), r"backbone.fpn.inner_blocks.\1.0.\2"),
    (re.compile(r"neck\.lateral_convs\.(\d)\.bn\.(.+)"), r"backbone.fpn.inner_blocks.\1.1.\2"),
    (re.compile(r"neck\.fpn_convs\.(\d)\.conv\.(.+)"), r"backbone.fpn.layer_blocks.\1.0.\2"),
    (re.compile(r"neck\.fpn_convs\.(\d)\.bn\.(.+)"), r"backbone.fpn.layer_blocks.\1.1.\2"),
    (re.compile(r"rpn_head\.rpn_conv\.(.+)"), r"proposal_generator.rpn_head.conv.\1"),
    (re.compile(r"rpn_head\.rpn_cls\.(.+)"), r"proposal_generator.rpn_head.objectness_logits.\1"),
    (re.compile(r"rpn_head\.rpn_reg\.(.+)"), r"proposal_generator.rpn_head.anchor_deltas.\1"),
    (re.compile(r"roi_head\.(bbox_head|mask_head)((?:\.\d)?)\.(.+)"), None),  # per-head rules below
]
_MMDET_BOX = [
    (re.compile(r"shared_convs\.(\d+)\.conv\.(.+)"), lambda m: f"box_head{{}}.conv{int(m[1]) + 1}.{m[2]}"),
    (re.compile(r"shared_convs\.(\d+)\.bn\.(.+)"), lambda m: f"box_head{{}}.conv{int(m[1]) + 1}.norm.{m[2]}"),
    (re.compile(r"shared_fcs\.(\d+)\.(.+)"), lambda m: f"box_head{{}}.fc{int(m[1]) + 1}.{m[2]}"),
    (re.compile(r"fc_cls\.(.+)"), lambda m: f"box_predictor{{}}.cls_score.{m[1]}"),
    (re.compile(r"fc_reg\.(.+)"), lambda m: f"box_predictor{{}}.bbox_pred.{m[1]}"),
]
_MMDET_MASK = [
    (re.compile(r"convs\.(\d+)\.conv\.(.+)"), lambda m: f"mask_head{{}}.mask_fcn{int(m[1]) + 1}.{m[2]}"),
    (re.compile(r"convs\.(\d+)\.bn\.(.+)"), lambda m: f"mask_head{{}}.mask_fcn{int(m[1]) + 1}.norm.{m[2]}"),
    (re.compile(r"upsample\.(.+)"), lambda m: f"mask_head{{}}.deconv.{m[1]}"),
    (re.compile(r"conv_logits\.(.+)"), lambda m: f"mask_head{{}}.predictor.{m[1]}"),
]


def _mmdet_key(key: str) -> str | None:
    for pattern, target in _MMDET_RULES:
        match = pattern.fullmatch(key)
        if match is None:
            continue
        if target is not None:
            return match.expand(target)
        head, stage, rest = match.groups()
        for sub, name in (_MMDET_BOX if head == "bbox_head" else _MMDET_MASK):
            if inner := sub.fullmatch(rest):
                return "roi_heads." + name(inner).format(stage)
    return None


def from_mmdet(checkpoint: Mapping) -> tuple[dict[str, torch.Tensor], list[str]]:
    """An mmdetection ResNeSt R-CNN state_dict (or its checkpoint: ``state_dict`` is unwrapped) → our names.

    The result loads into ``create_detector(..., fpn_norm='none', cascade_style='mmdet')`` (the zoo's mmdet
    rows). Raises ValueError naming the keys when the file is not an mmdet FPN R-CNN.
    """
    notes: list[str] = []
    sd = unwrap_state_dict(checkpoint, notes)
    if not any(k.startswith("neck.lateral_convs.") for k in sd):
        raise ValueError("not an mmdet FPN detector: no 'neck.lateral_convs.' keys")
    return _whole_detector(sd, "mmdet", "backbone.", _mmdet_key, notes)


def to_detector_state_dict(checkpoint: Mapping) -> tuple[dict[str, torch.Tensor], list[str]]:
    """A detectron2 or mmdet file, or one already in our names (``splitattn convert --detector``), → our names."""
    notes: list[str] = []
    sd = unwrap_state_dict(checkpoint, notes)
    if any(k.startswith("backbone.body.") for k in sd):
        return sd, notes + ["already in splitattn's detector layout"]
    if any(k.startswith("neck.") for k in sd):
        return from_mmdet(sd)
    return from_detectron2(sd)


def convert_detector_file(src: str | os.PathLike, dst: str | os.PathLike, fmt: str | None = None) -> list[str]:
    """Read ``src`` safely (weights only), convert the whole detector, write ``dst`` atomically; return notes."""
    state, notes = to_detector_state_dict(read_checkpoint_file(src))
    atomic_save(state, dst, fmt=fmt)  # fmt None: safetensors for a .safetensors dst
    return notes + [f"wrote {len(state)} tensors to {dst}"]

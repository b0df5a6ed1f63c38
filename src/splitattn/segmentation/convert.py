"""Whole-segmenter checkpoints (PyTorch-Encoding, mmsegmentation) → :func:`~.models.create_segmenter`'s names.

PyTorch-Encoding (zhanghang1989/PyTorch-Encoding ``encoding/models/sseg/{base,deeplab,fcn}.py``): the backbone is
``pretrained.*`` with the official ResNeSt names; DeepLabV3's ``head.aspp.b0..b3`` (1×1 and atrous
Conv-BN-ReLU), ``head.aspp.b4.gap.{1,2}`` (image pooling conv and BN), ``head.aspp.project.{0,1}``,
``head.block.{0,1,4}`` (3×3 conv, BN, classifier); FCN's ``head.conv5.{0,1,4}``; the auxiliary
``auxlayer.conv5.{0,1,4}``. Our Encoding flavour uses torchvision's ``ASPP`` / ``FCNHead``, whose indices differ.

mmsegmentation (open-mmlab/mmsegmentation ``mmseg/models/segmentors/encoder_decoder.py``): ``backbone.*`` in
OpenMMLab's ResNeSt names (renamed by :func:`splitattn.models.key_converters.to_official`), ``decode_head.*`` and
``auxiliary_head.*``, which our mmseg flavour keeps by name (:mod:`.mmseg_heads`) under ``head.`` / ``aux_head.``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

import torch

from ..models.key_converters import unwrap_state_dict, whole_model_to_official
from ..models.weights import atomic_save, read_checkpoint_file

LAYOUTS = ("encoding", "mmseg", "splitattn")

_ENCODING_RULES = [
    (re.compile(r"head\.aspp\.b([0-3])\.(.+)"), r"head.0.convs.\1.\2"),
    (re.compile(r"head\.aspp\.b4\.gap\.([12])\.(.+)"), r"head.0.convs.4.\1.\2"),
    (re.compile(r"head\.aspp\.project\.(.+)"), r"head.0.project.\1"),
    (re.compile(r"head\.block\.0\.(.+)"), r"head.1.\1"),
    (re.compile(r"head\.block\.1\.(.+)"), r"head.2.\1"),
    (re.compile(r"head\.block\.4\.(.+)"), r"head.5.\1"),
    (re.compile(r"head\.conv5\.(.+)"), r"head.\1"),  # FCN: the same Sequential indices as torchvision's FCNHead
    (re.compile(r"auxlayer\.conv5\.(.+)"), r"aux_head.\1"),
]
_MMSEG_RULES = [
    (re.compile(r"decode_head\.(.+)"), r"head.\1"),
    (re.compile(r"auxiliary_head\.(.+)"), r"aux_head.\1"),
]


def _renamer(rules):
    def rename(key: str) -> str | None:
        for pattern, target in rules:
            if match := pattern.fullmatch(key):
                return match.expand(target)
        return None
    return rename


def detect_layout(keys) -> str:
    """``'encoding'``, ``'mmseg'`` or ``'splitattn'`` from a whole segmenter's keys; ValueError otherwise."""
    keys = list(keys)
    if any(k.startswith("pretrained.") for k in keys):
        return "encoding"
    if any(k.startswith("decode_head.") for k in keys):
        return "mmseg"
    if any(k.startswith("backbone.") for k in keys) and any(k.startswith("head.") for k in keys):
        return "splitattn"
    raise ValueError("not a whole segmenter: expected PyTorch-Encoding ('pretrained.*' + 'head.*'), mmseg "
                     "('backbone.*' + 'decode_head.*') or splitattn ('backbone.*' + 'head.*') keys; a backbone-only "
                     "file goes to create_segmenter(pretrained_backbone=...)")


def from_encoding(checkpoint: Mapping) -> tuple[dict[str, torch.Tensor], list[str]]:
    """A PyTorch-Encoding DeepLabV3 / FCN ResNeSt state_dict → our ``flavour='encoding'`` names, with notes."""
    notes: list[str] = []
    sd = unwrap_state_dict(checkpoint, notes)
    if detect_layout(sd) != "encoding":
        raise ValueError("not a PyTorch-Encoding segmenter: no 'pretrained.' (backbone) keys")
    return whole_model_to_official(sd, "official", "pretrained.", "backbone.", _renamer(_ENCODING_RULES), notes,
                                   "a splitattn DeepLabV3 / FCN (encoding flavour)")


def from_mmseg(checkpoint: Mapping) -> tuple[dict[str, torch.Tensor], list[str]]:
    """An mmsegmentation ResNeSt EncoderDecoder state_dict (or its checkpoint: ``state_dict`` is unwrapped) → our
    ``flavour='mmseg'`` names, with notes."""
    notes: list[str] = []
    sd = unwrap_state_dict(checkpoint, notes)
    if detect_layout(sd) != "mmseg":
        raise ValueError("not an mmseg segmenter: no 'decode_head.' keys")
    return whole_model_to_official(sd, "mmdet", "backbone.", "backbone.", _renamer(_MMSEG_RULES), notes,
                                   "a splitattn segmenter (mmseg flavour)")


def flavour_of(state: Mapping[str, torch.Tensor]) -> str:
    """The ``create_segmenter`` flavour a state_dict in our names belongs to (mmseg heads have ``conv_seg``)."""
    return "mmseg" if any(k.startswith("head.conv_seg.") for k in state) else "encoding"


def to_segmenter_state_dict(checkpoint: Mapping) -> tuple[dict[str, torch.Tensor], list[str], str]:
    """Any supported whole-segmenter file → (our state_dict, notes, the layout it came in)."""
    notes: list[str] = []
    sd = unwrap_state_dict(checkpoint, notes)
    layout = detect_layout(sd)
    if layout == "splitattn":
        return sd, notes + ["already in splitattn's segmenter layout"], layout
    state, more = (from_encoding if layout == "encoding" else from_mmseg)(sd)
    return state, notes + more, layout


def convert_segmenter_file(src: str | os.PathLike, dst: str | os.PathLike, fmt: str | None = None) -> list[str]:
    """Read ``src`` safely (weights only), convert the whole segmenter, write ``dst`` atomically; return notes."""
    state, notes, layout = to_segmenter_state_dict(read_checkpoint_file(src))
    atomic_save(state, dst, fmt=fmt)  # fmt None: safetensors for a .safetensors dst
    flavour = flavour_of(state)
    return notes + [f"wrote {len(state)} tensors to {dst} (load with create_segmenter(KIND, BACKBONE, NUM_CLASSES, "
                    f"flavour={flavour!r}, pretrained=PATH))"]

"""Whole-detector checkpoints of detectron2 + the official ResNeSt plug-in → our detectron2-flavoured detectors.

Our detectors (``create_detector(..., flavour='detectron2')``) keep detectron2's names for the RPN and RoI
heads (``proposal_generator.*``, ``roi_heads.*``), so only the backbone (official ResNeSt names under
``backbone.body``, via :func:`splitattn.models.key_converters.to_official`) and the FPN (torchvision's
``FeaturePyramidNetwork`` under ``backbone.fpn``) are renamed. Upstream names: facebookresearch/detectron2
``detectron2/modeling/backbone/fpn.py`` (``fpn_lateral{2..5}``, ``fpn_output{2..5}``, each a ``Conv2d`` with a
``norm`` child).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

import torch

from ..models.key_converters import to_official, unwrap_state_dict
from ..models.weights import atomic_save, read_checkpoint_file

_D2_FPN = re.compile(r"backbone\.fpn_(lateral|output)([2-5])\.(weight|bias|norm\.(.+))")
# buffers older detectron2 versions saved, which the model computes itself
_D2_DERIVED = ("pixel_mean", "pixel_std")


def _fpn_key(match: re.Match) -> str:
    kind, level, tensor, norm_tensor = match.groups()
    block = "inner_blocks" if kind == "lateral" else "layer_blocks"
    where = f"1.{norm_tensor}" if norm_tensor else f"0.{tensor}"
    return f"backbone.fpn.{block}.{int(level) - 2}.{where}"


def from_detectron2(checkpoint: Mapping) -> tuple[dict[str, torch.Tensor], list[str]]:
    """A detectron2 ResNeSt R-CNN state_dict (or its checkpoint dict) → our detector's names, with notes.

    Raises ValueError naming the keys when the file is not a detectron2 FPN detector.
    """
    notes: list[str] = []
    sd = unwrap_state_dict(checkpoint, notes)
    if not any(k.startswith("backbone.bottom_up.") for k in sd):
        raise ValueError("not a detectron2 FPN detector: no 'backbone.bottom_up.' keys (a backbone-only file "
                         "goes to create_detector(pretrained_backbone=...) after 'splitattn convert')")
    body, body_notes = to_official({k: v for k, v in sd.items() if k.startswith("backbone.bottom_up.")},
                                   source="detectron2")
    notes += [n for n in body_notes if not n.startswith("took the")]
    out = {f"backbone.body.{k}": v for k, v in body.items()}
    unknown = []
    for key, value in sd.items():
        if key.startswith("backbone.bottom_up."):
            continue
        if key in _D2_DERIVED:
            notes.append(f"dropped {key} (the detector holds the 0-255 image mean/std itself)")
        elif match := _D2_FPN.fullmatch(key):
            out[_fpn_key(match)] = value
        elif key.startswith(("proposal_generator.", "roi_heads.")):
            out[key] = value
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(f"{len(unknown)} tensor(s) of this detectron2 file have no place in a splitattn detector: "
                         f"{', '.join(unknown[:6])}{' …' if len(unknown) > 6 else ''}")
    return out, notes


def to_detector_state_dict(checkpoint: Mapping) -> tuple[dict[str, torch.Tensor], list[str]]:
    """A detectron2 file, or one already in our names (``splitattn convert --detector`` output), → our names."""
    notes: list[str] = []
    sd = unwrap_state_dict(checkpoint, notes)
    if any(k.startswith("backbone.body.") for k in sd):
        return sd, notes + ["already in splitattn's detector layout"]
    return from_detectron2(sd)


def convert_detector_file(src: str | os.PathLike, dst: str | os.PathLike) -> list[str]:
    """Read ``src`` safely (weights only), convert the whole detector, write ``dst`` atomically; return notes."""
    state, notes = from_detectron2(read_checkpoint_file(src))
    atomic_save(state, dst)
    return notes + [f"wrote {len(state)} tensors to {dst}"]

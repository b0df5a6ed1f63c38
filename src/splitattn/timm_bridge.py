"""Our models inside timm: ``import splitattn.timm_bridge`` registers ``splitattn_<name>`` for every zoo model.

After the import, ``timm.create_model("splitattn_resnest50", pretrained=True, features_only=True,
output_stride=8)`` builds *our* network (the official dilation, the official weights with their sha256
check), registered through timm's public ``timm.models.register_model`` with a ``pretrained_cfg`` from our
zoo, so timm's ``train.py`` / ``validate.py`` (``--model splitattn_resnest50``, after adding the import),
``timm.data.resolve_data_config`` (the official crop and interpolation) and segmentation_models_pytorch's
``tu-`` encoders (``encoder_name="tu-splitattn_resnest50"``) use them. Names: ``timm.list_models("splitattn_*")``.

timm's own ``resnest*`` models stay as they are: their dilated mode is not the official one
(``docs/models.md``), which is the point of the ``splitattn_`` names.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .models.factory import create_model
from .models.pretrained_cfg import pretrained_cfg
from .models.zoo import get_entry, list_models
from .optional import require

PREFIX = "splitattn_"
# timm's default for features_only: the stem and the four stages (segmentation_models_pytorch relies on it)
TIMM_OUT_INDICES = (0, 1, 2, 3, 4)

_timm = require("timm", "the timm bridge (splitattn.timm_bridge)")
from timm.models import register_model  # noqa: E402  (after the check that names the extra)

OVERLAY_KEYS = ("file", "url", "hf_hub_id")


def _weights_source(pretrained: bool, overlay: dict[str, Any] | None) -> bool | str:
    """timm's ``pretrained_cfg_overlay=dict(file=... | url=... | hf_hub_id=...)`` points ``pretrained=True`` at
    another file; the evaluation settings come from the zoo, so other keys are refused rather than ignored."""
    overlay = overlay or {}
    unknown = sorted(set(overlay) - set(OVERLAY_KEYS))
    if unknown:
        raise ValueError(f"pretrained_cfg_overlay keys {unknown} are not used by splitattn models: give the weights "
                         f"with {', '.join(OVERLAY_KEYS)} (the preprocessing is the zoo entry's)")
    if pretrained and overlay.get("hf_hub_id"):
        return f"hf-hub:{overlay['hf_hub_id']}"
    if pretrained and (overlay.get("file") or overlay.get("url")):
        return os.fspath(overlay.get("file") or overlay["url"])
    return bool(pretrained)


def build(name: str, pretrained: bool = False, *, features_only: bool = False,
          out_indices: Sequence[int] | None = None, pretrained_cfg_overlay: dict[str, Any] | None = None,
          device: Any = None, dtype: torch.dtype | None = None, **kwargs) -> nn.Module:
    """What ``timm.create_model("splitattn_<name>", ...)`` calls: our :func:`splitattn.create_model`.

    timm's arguments map as: ``pretrained`` (True = the zoo's checkpoint, or ``pretrained_cfg_overlay``'s
    ``file``/``url``), ``features_only`` / ``out_indices`` (default (0, 1, 2, 3, 4) as timm), ``output_stride``
    (8/16/32 with the official dilation), ``num_classes``, ``in_chans``, ``global_pool``, ``drop_rate``,
    ``drop_block_rate`` and any other :class:`splitattn.ResNeSt` argument. ``drop_path_rate`` other than 0 is
    refused: ResNeSt has DropBlock, not stochastic depth.
    """
    if kwargs.pop("pretrained_cfg", None) is not None:  # timm's "name.tag" form, or a config object
        raise ValueError(f"splitattn_{name} has one set of weights: drop the '.tag' / pretrained_cfg (point at other "
                         "weights with pretrained_cfg_overlay=dict(file=...))")
    if kwargs.pop("cache_dir", None) is not None:
        raise ValueError("cache_dir: splitattn caches checkpoints under $SPLITATTN_HOME (and the Hub's under "
                         "HF_HUB_CACHE): set those instead")
    kwargs.pop("pretrained_strict", None)  # our loads are always strict, with a report of what differs
    if kwargs.pop("feature_cls", None) not in (None, "list", "getter"):
        raise ValueError("feature_cls: splitattn feature models return a list of maps (leave it at the default)")
    if kwargs.pop("drop_path_rate", 0.0):
        raise ValueError("drop_path_rate: ResNeSt has no stochastic depth; use drop_block_rate (the paper's "
                         "DropBlock) or drop_rate")
    indices = TIMM_OUT_INDICES if out_indices is None else tuple(out_indices)
    model = create_model(name, _weights_source(pretrained, pretrained_cfg_overlay), features_only=features_only,
                         out_indices=indices, **kwargs)
    if device is not None or dtype is not None:
        model = model.to(device=device, dtype=dtype)
    return model


def _entrypoint(name: str):
    def create(pretrained: bool = False, **kwargs) -> nn.Module:
        return build(name, pretrained, **kwargs)

    create.__name__ = create.__qualname__ = PREFIX + name
    create.__module__ = __name__
    create.__doc__ = f"splitattn's {name}: {get_entry(name).description}"
    return create


def _default_cfg(name: str) -> dict[str, Any]:
    cfg = pretrained_cfg(get_entry(name))
    cfg.pop("architecture"), cfg.pop("tag")  # timm fills both in from the entrypoint's name
    return cfg


def register_all() -> list[str]:
    """Register every zoo model (also those added with :func:`splitattn.register_model` before the call)."""
    names = []
    for name in list_models():
        if PREFIX + name in _registered:
            continue
        default_cfgs[PREFIX + name] = _default_cfg(name)
        globals()[PREFIX + name] = register_model(_entrypoint(name))
        _registered.add(PREFIX + name)
        names.append(PREFIX + name)
    return names


default_cfgs: dict[str, dict[str, Any]] = {}  # read by timm's register_model: list_models(pretrained=True) etc.
_registered: set[str] = set()
register_all()

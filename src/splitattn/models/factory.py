"""``create_model``: a zoo entry plus overrides → a network, optionally with weights."""

from __future__ import annotations

import difflib
import inspect
import os
import warnings
from collections.abc import Sequence

from .resnest import ResNeSt, ResNeStFeatures
from .weights import load_weights
from .zoo import get_entry

_ARCH_ARGS = [p for p in inspect.signature(ResNeSt.__init__).parameters if p != "self"]


def create_model(
    name: str,
    pretrained: bool | str | os.PathLike = False,
    *,
    features_only: bool = False,
    out_indices: Sequence[int] = (1, 2, 3, 4),
    progress: bool = True,
    **overrides,
) -> ResNeSt:
    """Build a zoo model.

    Args:
        name: a name from :func:`list_models` (timm names such as ``resnest50d`` work too).
        pretrained: False, True (the released checkpoint, downloaded and sha256-checked), or a local
            path / URL of a state_dict with the official keys.
        features_only: return a :class:`ResNeStFeatures` backbone giving the maps at ``out_indices``
            (0 = stem, 1..4 = C2..C5); its ``feature_info`` lists channels and strides.
        **overrides: any :class:`ResNeSt` argument, e.g. ``num_classes``, ``in_chans``,
            ``output_stride``, ``norm_layer``, ``drop_rate``, ``drop_block_rate``.

    With pretrained weights and a different ``num_classes`` the backbone is loaded and the new
    head kept, with a warning that says so.
    """
    entry = get_entry(name)
    unknown = [key for key in overrides if key not in _ARCH_ARGS]
    if unknown:
        hints = {key: difflib.get_close_matches(key, _ARCH_ARGS, n=1) for key in unknown}
        detail = ", ".join(f"{k!r}" + (f" (did you mean {v[0]!r}?)" if v else "") for k, v in hints.items())
        raise TypeError(f"create_model() got unknown argument(s) {detail}; valid: {', '.join(_ARCH_ARGS)}")
    kwargs = {**entry.arch, **overrides}
    if features_only:
        model = ResNeStFeatures(out_indices=out_indices, **kwargs)
    else:
        model = ResNeSt(**kwargs)
    model.zoo_entry = entry
    if pretrained is not False and pretrained is not None:
        report = load_weights(model, pretrained, head=None, entry=entry, progress=progress)
        for note in report.notes:
            warnings.warn(f"{entry.name}: {note}", stacklevel=2)
    return model

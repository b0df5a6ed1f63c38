"""Which feature maps a network returns: timm's ``FeatureInfo`` interface, and timm's index rule.

Code written for timm reads ``model.feature_info.channels()`` / ``.reduction()`` / ``.module_name()``
(mmpretrain's ``TIMMBackbone``, detrex, segmentation_models_pytorch's ``tu-`` encoders), so our networks
carry an object with those methods (the interface of ``timm/models/_features.py`` ``FeatureInfo``).
Unlike timm's, iterating or indexing it walks the *returned* maps' dicts, which is what ``feature_info``
was here before it became an object; ``get_dicts(idx=...)`` reaches every level.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any


def take_indices(num_levels: int, indices: int | Sequence[int] | None) -> tuple[list[int], int]:
    """timm's ``feature_take_indices``: None → every level, an int n → the last n, a sequence → those in the
    caller's order (negative ones count from the end). Returns the indices and the deepest one."""
    if indices is None:
        chosen = list(range(num_levels))
    elif isinstance(indices, int):
        if not 0 < indices <= num_levels:
            raise ValueError(f"indices={indices}: take the last n of {num_levels} levels, 1 <= n <= {num_levels}")
        chosen = list(range(num_levels - indices, num_levels))
    else:
        chosen = []
        for index in indices:
            if not -num_levels <= index < num_levels:
                raise ValueError(f"feature index {index} is out of range for {num_levels} levels (0 = stem, "
                                 f"{num_levels - 1} = the deepest stage)")
            chosen.append(index % num_levels)
        if not chosen:
            raise ValueError("indices is empty: name at least one feature level")
    return chosen, max(chosen)


class FeatureInfo:
    """Channels (``num_chs``), stride (``reduction``) and producing module of each feature level, and which
    levels (``out_indices``) the network returns."""

    def __init__(self, info: Sequence[dict[str, Any]], out_indices: Sequence[int] | None = None):
        self.info = [{**entry, "index": i} for i, entry in enumerate(info)]
        self.out_indices = tuple(range(len(self.info)) if out_indices is None else out_indices)

    def from_other(self, out_indices: Sequence[int]) -> FeatureInfo:
        return FeatureInfo(self.info, out_indices)

    def get(self, key: str, idx: int | Sequence[int] | None = None) -> Any:
        """``key`` of the returned levels (idx None), of level ``idx``, or of the levels in ``idx``."""
        if idx is None:
            return [self.info[i][key] for i in self.out_indices]
        if isinstance(idx, int):
            return self.info[idx][key]
        return [self.info[i][key] for i in idx]

    def get_dicts(self, keys: Sequence[str] | None = None, idx: int | Sequence[int] | None = None) -> Any:
        def pick(i: int) -> dict[str, Any]:
            return dict(self.info[i]) if keys is None else {k: self.info[i][k] for k in keys}

        if isinstance(idx, int):
            return pick(idx)
        return [pick(i) for i in (self.out_indices if idx is None else idx)]

    def channels(self, idx: int | Sequence[int] | None = None) -> Any:
        return self.get("num_chs", idx)

    def reduction(self, idx: int | Sequence[int] | None = None) -> Any:
        return self.get("reduction", idx)

    def module_name(self, idx: int | Sequence[int] | None = None) -> Any:
        return self.get("module", idx)

    # the returned maps' dicts, as the list this object replaced
    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.get_dicts())

    def __len__(self) -> int:
        return len(self.out_indices)

    def __getitem__(self, item: int) -> dict[str, Any]:
        return self.get_dicts()[item]

    def __repr__(self) -> str:
        return f"FeatureInfo({self.get_dicts(keys=('num_chs', 'reduction', 'module'))})"

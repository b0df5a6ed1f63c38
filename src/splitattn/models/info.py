"""Parameter and multiply-add counts, measured rather than quoted.

GMACs come from ``torch.utils.flop_counter`` (FLOPs / 2) on the *meta* device, so even
ResNeSt-269 at 416 px is counted in about a second without allocating its activations.
The paper's "GFLOPs" are multiply-adds too (paper-facts.md §4), so the figures compare directly.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import torch
from torch.utils.flop_counter import FlopCounterMode

from .factory import create_model
from .zoo import ModelEntry, get_entry


@dataclass(frozen=True)
class Measured:
    params: int
    gmacs: float
    crop: int

    @property
    def params_m(self) -> float:
        return self.params / 1e6


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def measure(name: str, crop: int | None = None, **overrides) -> Measured:
    """Params and GMACs of zoo model ``name`` for one ``crop``×``crop`` image (default: its eval crop)."""
    entry = get_entry(name)
    crop = crop or entry.eval.crop
    with torch.device("meta"):
        model = create_model(name, **overrides).eval()
        image = torch.empty(1, model.in_chans, crop, crop)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(image)
    return Measured(count_params(model), counter.get_total_flops() / 2e9, crop)


def model_info(name: str) -> dict:
    """Everything about a variant: the zoo entry plus params/GMACs measured at its eval crop."""
    entry: ModelEntry = get_entry(name)
    measured = measure(entry.name)
    info = asdict(replace(entry, arch=dict(entry.arch)))  # asdict cannot deep-copy a mappingproxy
    info["eval"]["crop_pct"] = round(entry.eval.crop_pct, 4)
    info["measured"] = {"params_m": round(measured.params_m, 3), "params": measured.params,
                        "gmacs": round(measured.gmacs, 3), "crop": measured.crop}
    return info

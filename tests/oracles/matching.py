"""Pair two detectors' outputs on one image: by score order, greedily, same label, by box IoU.

A detection of ours is matched when the best unpaired oracle detection of its label has box IoU ≥
``min_iou`` and |Δscore| ≤ ``max_dscore``. An unmatched one is a *near-tie* when another of our detections
has a score within ``max_dscore`` of it (its rank against the cut-off or NMS is then arbitrary), else a failure.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torchvision.ops import box_iou


@dataclass
class MatchReport:
    total: int
    matched: int = 0
    near_ties: int = 0
    failures: int = 0
    max_dscore: float = 0.0
    min_box_iou: float = 1.0
    min_mask_iou: float = 1.0
    pairs: list[tuple[int, int]] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.matched / max(self.total, 1)

    def line(self) -> str:
        return (f"{self.matched}/{self.total} matched ({100 * self.rate:.2f} %), {self.near_ties} near-ties, "
                f"{self.failures} failures, max |Δscore| {self.max_dscore:.2e}, min box IoU {self.min_box_iou:.6f}, "
                f"min mask IoU {self.min_mask_iou:.4f}")


def mask_iou(a: torch.Tensor, b: torch.Tensor) -> float:
    union = (a | b).sum().item()
    return 1.0 if union == 0 else (a & b).sum().item() / union


def match(ours: dict, theirs: dict, min_iou: float = 0.999, max_dscore: float = 1e-4,
          min_mask_iou: float = 0.99) -> MatchReport:
    """``ours`` / ``theirs``: ``boxes``, ``scores``, ``labels`` (same numbering) and optionally boolean ``masks``."""
    report = MatchReport(total=len(ours["scores"]))
    order = torch.argsort(ours["scores"], descending=True, stable=True)
    iou = box_iou(ours["boxes"], theirs["boxes"]) if len(theirs["boxes"]) else None
    taken = torch.zeros(len(theirs["scores"]), dtype=torch.bool)
    for i in order.tolist():
        candidates = (theirs["labels"] == ours["labels"][i]) & ~taken
        j = None
        if iou is not None and candidates.any():
            j = int(torch.where(candidates, iou[i], torch.tensor(-1.0)).argmax())
        ok = j is not None and iou[i, j] >= min_iou and abs(ours["scores"][i] - theirs["scores"][j]) <= max_dscore
        if ok and "masks" in ours:
            m = mask_iou(ours["masks"][i], theirs["masks"][j])
            ok = m >= min_mask_iou
            report.min_mask_iou = min(report.min_mask_iou, m) if ok else report.min_mask_iou
        if ok:
            taken[j] = True
            report.matched += 1
            report.pairs.append((i, j))
            report.max_dscore = max(report.max_dscore, float(abs(ours["scores"][i] - theirs["scores"][j])))
            report.min_box_iou = min(report.min_box_iou, float(iou[i, j]))
        else:
            others = torch.cat([ours["scores"][:i], ours["scores"][i + 1:]])
            if len(others) and (others - ours["scores"][i]).abs().min() <= max_dscore:
                report.near_ties += 1
            else:
                report.failures += 1
    return report

"""Box arithmetic of detectron2's R-CNNs, written out so our detectors compute what detectron2 computes.

Each function is the equation of the detectron2 module named in its docstring (facebookresearch/detectron2,
``detectron2/modeling/box_regression.py``, ``matcher.py``, ``sampling.py``, ``poolers.py``,
``structures/boxes.py``); torchvision's own versions differ in small ways (rounded anchors, a private
``BoxCoder``, a 1e-6 level-mapper epsilon, a minimum box size), and those ways change which boxes survive NMS.
"""

from __future__ import annotations

import math

import torch
from torchvision.ops import box_iou, roi_align

# exp() clamp of box decoding: log(1000 / 16), as detectron2 and torchvision
SCALE_CLAMP = math.log(1000.0 / 16)


class BoxCoder:
    """``Box2BoxTransform``: (dx, dy, dw, dh) of a target box relative to a source box, scaled by ``weights``."""

    def __init__(self, weights: tuple[float, float, float, float]):
        self.weights = tuple(float(w) for w in weights)

    def encode(self, src: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        src_w, src_h = src[:, 2] - src[:, 0], src[:, 3] - src[:, 1]
        src_x, src_y = src[:, 0] + 0.5 * src_w, src[:, 1] + 0.5 * src_h
        tgt_w, tgt_h = target[:, 2] - target[:, 0], target[:, 3] - target[:, 1]
        tgt_x, tgt_y = target[:, 0] + 0.5 * tgt_w, target[:, 1] + 0.5 * tgt_h
        wx, wy, ww, wh = self.weights
        return torch.stack((wx * (tgt_x - src_x) / src_w, wy * (tgt_y - src_y) / src_h,
                            ww * torch.log(tgt_w / src_w), wh * torch.log(tgt_h / src_h)), dim=1)

    def decode(self, deltas: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """``deltas`` (N, 4k) applied to ``boxes`` (N, 4) → (N, 4k); decoded in float32 as detectron2."""
        deltas = deltas.float()
        boxes = boxes.to(deltas.dtype)
        widths, heights = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        ctr_x, ctr_y = boxes[:, 0] + 0.5 * widths, boxes[:, 1] + 0.5 * heights
        wx, wy, ww, wh = self.weights
        dx, dy = deltas[:, 0::4] / wx, deltas[:, 1::4] / wy
        dw = torch.clamp(deltas[:, 2::4] / ww, max=SCALE_CLAMP)
        dh = torch.clamp(deltas[:, 3::4] / wh, max=SCALE_CLAMP)
        pred_x, pred_y = dx * widths[:, None] + ctr_x[:, None], dy * heights[:, None] + ctr_y[:, None]
        pred_w, pred_h = torch.exp(dw) * widths[:, None], torch.exp(dh) * heights[:, None]
        out = torch.stack((pred_x - 0.5 * pred_w, pred_y - 0.5 * pred_h,
                           pred_x + 0.5 * pred_w, pred_y + 0.5 * pred_h), dim=-1)
        return out.reshape(deltas.shape)


def smooth_l1_sum(pred: torch.Tensor, target: torch.Tensor, beta: float) -> torch.Tensor:
    """fvcore's ``smooth_l1_loss(reduction='sum')``: plain L1 below beta 1e-5 (the paper's configs use 0)."""
    diff = torch.abs(pred - target)
    if beta < 1e-5:
        return diff.sum()
    return torch.where(diff < beta, 0.5 * diff**2 / beta, diff - 0.5 * beta).sum()


def clip_boxes(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``Boxes.clip``: x into [0, width], y into [0, height]."""
    x1, y1 = boxes[:, 0].clamp(min=0, max=width), boxes[:, 1].clamp(min=0, max=height)
    x2, y2 = boxes[:, 2].clamp(min=0, max=width), boxes[:, 3].clamp(min=0, max=height)
    return torch.stack((x1, y1, x2, y2), dim=-1)


def nonempty(boxes: torch.Tensor, threshold: float = 0.0) -> torch.Tensor:
    """``Boxes.nonempty``: width and height both above ``threshold``."""
    return ((boxes[:, 2] - boxes[:, 0]) > threshold) & ((boxes[:, 3] - boxes[:, 1]) > threshold)


class Matcher:
    """``Matcher``: each prediction gets its best ground truth and a label by IoU interval.

    ``thresholds`` splits [-inf, inf) into intervals labelled by ``labels`` (1 foreground, 0 background,
    -1 ignore). With ``allow_low_quality_matches`` every prediction whose IoU equals the best one of some
    ground truth becomes foreground (ties included), keeping its own best match as detectron2 does.
    """

    def __init__(self, thresholds: list[float], labels: list[int], allow_low_quality_matches: bool = False):
        if len(labels) != len(thresholds) + 1:
            raise ValueError(f"need one label per interval: {len(thresholds)} thresholds, {len(labels)} labels")
        self.thresholds = [-float("inf"), *thresholds, float("inf")]
        self.labels, self.allow_low_quality_matches = labels, allow_low_quality_matches

    def __call__(self, quality: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``quality`` (G, P) IoUs → (matched gt index (P,), label (P,) int8)."""
        if quality.numel() == 0:
            matches = quality.new_full((quality.size(1),), 0, dtype=torch.int64)
            return matches, quality.new_full((quality.size(1),), self.labels[0], dtype=torch.int8)
        best, matches = quality.max(dim=0)
        labels = matches.new_full(matches.size(), 1, dtype=torch.int8)
        for label, low, high in zip(self.labels, self.thresholds[:-1], self.thresholds[1:], strict=True):
            labels[(best >= low) & (best < high)] = label
        if self.allow_low_quality_matches:
            best_per_gt = quality.max(dim=1).values
            labels[torch.nonzero(quality == best_per_gt[:, None], as_tuple=True)[1]] = 1
        return matches, labels


def subsample_labels(labels: torch.Tensor, num_samples: int, positive_fraction: float,
                     bg_label: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``subsample_labels``: random foreground (≤ fraction) and background indices, ``num_samples`` in all.

    Foreground is any label other than -1 and ``bg_label``. Draws ``randperm`` for foreground then background,
    in that order, so a seeded generator gives detectron2's draw.
    """
    positive = torch.nonzero((labels != -1) & (labels != bg_label), as_tuple=True)[0]
    negative = torch.nonzero(labels == bg_label, as_tuple=True)[0]
    num_pos = min(positive.numel(), int(num_samples * positive_fraction))
    num_neg = min(negative.numel(), num_samples - num_pos)
    pos = positive[torch.randperm(positive.numel(), device=positive.device)[:num_pos]]
    neg = negative[torch.randperm(negative.numel(), device=negative.device)[:num_neg]]
    return pos, neg


def pairwise_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """IoU matrix (len(boxes1), len(boxes2)); torchvision's ``box_iou``, detectron2's ``pairwise_iou``."""
    return box_iou(boxes1, boxes2)


class RoIPooler:
    """``ROIPooler`` with ROIAlignV2: each box pooled from one FPN level at ``output_size``².

    Level = floor(4 + log2(sqrt(area) / 224 + 1e-8)) clamped to the pooled levels (the FPN paper's
    canonical 224-pixel box on P4). ``aligned=True`` samples at pixel centres (half-pixel shift),
    which torchvision's ``MultiScaleRoIAlign`` does not.
    """

    def __init__(self, output_size: int, strides: tuple[int, ...] = (4, 8, 16, 32), sampling_ratio: int = 0,
                 canonical_size: int = 224, canonical_level: int = 4):
        self.output_size, self.sampling_ratio = output_size, sampling_ratio
        self.scales = tuple(1.0 / s for s in strides)
        self.min_level = int(round(math.log2(strides[0])))
        self.max_level = self.min_level + len(strides) - 1
        self.canonical_size, self.canonical_level = canonical_size, canonical_level

    def levels(self, boxes: torch.Tensor) -> torch.Tensor:
        sizes = torch.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
        level = torch.floor(self.canonical_level + torch.log2(sizes / self.canonical_size + 1e-8))
        return torch.clamp(level, min=self.min_level, max=self.max_level).to(torch.int64) - self.min_level

    def __call__(self, features: list[torch.Tensor], boxes: list[torch.Tensor]) -> torch.Tensor:
        """Features of the pooled levels (finest first) and per-image boxes → (sum boxes, C, S, S)."""
        rois = torch.cat([torch.cat([b.new_full((len(b), 1), float(i)), b], dim=1) for i, b in enumerate(boxes)])
        size = self.output_size
        out = features[0].new_zeros((len(rois), features[0].shape[1], size, size))
        if len(rois) == 0:
            return out
        if len(features) == 1:
            return roi_align(features[0], rois, size, self.scales[0], self.sampling_ratio, aligned=True)
        levels = self.levels(rois[:, 1:])
        for level, (feature, scale) in enumerate(zip(features, self.scales, strict=True)):
            index = torch.nonzero(levels == level, as_tuple=True)[0]
            pooled = roi_align(feature, rois[index], size, scale, self.sampling_ratio, aligned=True)
            out.index_put_((index,), pooled)
        return out

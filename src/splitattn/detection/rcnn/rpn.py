"""detectron2's region proposal network: ``DefaultAnchorGenerator``, ``StandardRPNHead`` and ``RPN``.

Source: facebookresearch/detectron2 ``detectron2/modeling/anchor_generator.py`` and
``detectron2/modeling/proposal_generator/{rpn.py,proposal_utils.py}``. Module names follow detectron2's
(``rpn_head.conv``, ``rpn_head.objectness_logits``, ``rpn_head.anchor_deltas``) so its checkpoints load
by name. Anchors are not rounded (torchvision's are), which moves every proposal by up to half a pixel.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import batched_nms

from .boxes import BoxCoder, Matcher, clip_boxes, nonempty, pairwise_iou, smooth_l1_sum, subsample_labels


class AnchorGenerator(nn.Module):
    """One set of anchors per level: ``sizes[l]`` × ``aspect_ratios`` centred on every stride-``strides[l]`` cell."""

    def __init__(self, sizes: tuple[int, ...], aspect_ratios: tuple[float, ...], strides: tuple[int, ...]):
        super().__init__()
        if len(sizes) != len(strides):
            raise ValueError(f"need one anchor size per FPN level ({len(strides)}), got {len(sizes)}")
        self.strides = tuple(strides)
        cells = []
        for size in sizes:
            area, corners = float(size) ** 2, []
            for ratio in aspect_ratios:
                w = math.sqrt(area / ratio)
                h = ratio * w
                corners.append([-w / 2.0, -h / 2.0, w / 2.0, h / 2.0])
            cells.append(torch.tensor(corners))
        self.cells = cells
        self.num_anchors = len(aspect_ratios)

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        anchors = []
        for feature, stride, cell in zip(features, self.strides, self.cells, strict=True):
            height, width = feature.shape[-2:]
            xs = torch.arange(0, width * stride, step=stride, dtype=torch.float32, device=feature.device)
            ys = torch.arange(0, height * stride, step=stride, dtype=torch.float32, device=feature.device)
            grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
            grid_x, grid_y = grid_x.reshape(-1), grid_y.reshape(-1)
            shifts = torch.stack((grid_x, grid_y, grid_x, grid_y), dim=1)
            anchors.append((shifts.view(-1, 1, 4) + cell.to(feature.device).view(1, -1, 4)).reshape(-1, 4))
        return anchors


class RPNHead(nn.Module):
    """3×3 conv + ReLU shared by all levels, then 1×1 convs for objectness logits and box deltas."""

    def __init__(self, channels: int, num_anchors: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.objectness_logits = nn.Conv2d(channels, num_anchors, 1)
        self.anchor_deltas = nn.Conv2d(channels, num_anchors * 4, 1)
        for layer in (self.conv, self.objectness_logits, self.anchor_deltas):
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.constant_(layer.bias, 0)

    def forward(self, features: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        logits, deltas = [], []
        for x in features:
            t = F.relu(self.conv(x))
            logits.append(self.objectness_logits(t))
            deltas.append(self.anchor_deltas(t))
        return logits, deltas


class RPN(nn.Module):
    """Proposals and RPN losses as detectron2's ``RPN`` (the paper's settings are the defaults).

    ``forward(features, image_sizes, gt_boxes)`` returns per-image ``(boxes, objectness logits)`` sorted by
    score and, in training, ``{'loss_rpn_cls', 'loss_rpn_loc'}``. Pre-NMS top-k is per level, NMS per level,
    post-NMS top-k per image (detectron2's convention since v0.1.1, not Detectron's per batch).
    """

    def __init__(self, channels: int = 256, anchor_sizes: tuple[int, ...] = (32, 64, 128, 256, 512),
                 aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0), strides: tuple[int, ...] = (4, 8, 16, 32, 64),
                 pre_nms_topk: tuple[int, int] = (2000, 1000), post_nms_topk: tuple[int, int] = (1000, 1000),
                 nms_thresh: float = 0.7, batch_size_per_image: int = 256, positive_fraction: float = 0.5,
                 smooth_l1_beta: float = 0.0, min_box_size: float = 0.0):
        super().__init__()
        self.anchor_generator = AnchorGenerator(anchor_sizes, aspect_ratios, strides)
        self.rpn_head = RPNHead(channels, self.anchor_generator.num_anchors)
        self.box_coder = BoxCoder((1.0, 1.0, 1.0, 1.0))
        self.matcher = Matcher([0.3, 0.7], [0, -1, 1], allow_low_quality_matches=True)
        # (training, test)
        self.pre_nms_topk, self.post_nms_topk = tuple(pre_nms_topk), tuple(post_nms_topk)
        self.nms_thresh, self.min_box_size = nms_thresh, min_box_size
        self.batch_size_per_image, self.positive_fraction = batch_size_per_image, positive_fraction
        self.smooth_l1_beta = smooth_l1_beta

    def predict(self, features: list[torch.Tensor]):
        """(anchors per level, objectness (N, HWA) per level, deltas (N, HWA, 4) per level)."""
        anchors = self.anchor_generator(features)
        logits, deltas = self.rpn_head(features)
        logits = [score.permute(0, 2, 3, 1).flatten(1) for score in logits]
        deltas = [d.view(d.shape[0], -1, 4, d.shape[-2], d.shape[-1]).permute(0, 3, 4, 1, 2).flatten(1, -2)
                  for d in deltas]
        return anchors, logits, deltas

    def forward(self, features: list[torch.Tensor], image_sizes: list[tuple[int, int]],
                gt_boxes: list[torch.Tensor] | None = None):
        anchors, logits, deltas = self.predict(features)
        losses = {}
        if self.training:
            if gt_boxes is None:
                raise ValueError("the RPN needs the ground-truth boxes in training")
            labels, matched = self.label_and_sample_anchors(anchors, gt_boxes)
            losses = self.losses(anchors, logits, deltas, labels, matched)
        proposals = self.find_top_proposals(anchors, logits, deltas, image_sizes)
        return proposals, losses

    @torch.no_grad()
    def label_and_sample_anchors(self, anchors: list[torch.Tensor], gt_boxes: list[torch.Tensor]):
        """Per image: anchor labels (1 fg, 0 bg, -1 ignored, after sampling) and each anchor's matched gt box."""
        all_anchors = torch.cat(anchors)
        labels, matched = [], []
        for boxes in gt_boxes:
            index, label = self.matcher(pairwise_iou(boxes, all_anchors))
            label = label.to(boxes.device)
            pos, neg = subsample_labels(label, self.batch_size_per_image, self.positive_fraction, 0)
            label = torch.full_like(label, -1)
            label.scatter_(0, pos, 1)
            label.scatter_(0, neg, 0)
            labels.append(label)
            matched.append(boxes[index] if len(boxes) else torch.zeros_like(all_anchors))
        return labels, matched

    def losses(self, anchors, logits, deltas, labels, matched) -> dict[str, torch.Tensor]:
        """Sampled anchors' binary cross-entropy and L1 (smooth-L1 beta 0) box loss, both / (256 · images)."""
        all_anchors = torch.cat(anchors)
        labels = torch.stack(labels)
        fg = labels == 1
        targets = torch.stack([self.box_coder.encode(all_anchors, m) for m in matched])
        loc = smooth_l1_sum(torch.cat(deltas, dim=1)[fg], targets[fg], self.smooth_l1_beta)
        valid = labels >= 0
        cls = F.binary_cross_entropy_with_logits(torch.cat(logits, dim=1)[valid], labels[valid].to(torch.float32),
                                                 reduction="sum")
        normalizer = self.batch_size_per_image * len(labels)
        return {"loss_rpn_cls": cls / normalizer, "loss_rpn_loc": loc / normalizer}

    @torch.no_grad()
    def find_top_proposals(self, anchors, logits, deltas, image_sizes):
        """Decode, keep the top-k per level, clip, drop empty boxes, NMS per level, keep the top-k per image."""
        pre_topk = self.pre_nms_topk[0 if self.training else 1]
        post_topk = self.post_nms_topk[0 if self.training else 1]
        num_images = len(image_sizes)
        batch = torch.arange(num_images, device=logits[0].device)
        top_boxes, top_scores, level_ids = [], [], []
        for level, (anchors_l, logits_l, deltas_l) in enumerate(zip(anchors, logits, deltas, strict=True)):
            boxes = self.box_coder.decode(deltas_l.reshape(-1, 4),
                                          anchors_l.unsqueeze(0).expand(num_images, -1, -1).reshape(-1, 4))
            boxes = boxes.view(num_images, -1, 4)
            k = min(pre_topk, logits_l.shape[1])
            scores, index = logits_l.topk(k, dim=1)
            top_boxes.append(boxes[batch[:, None], index])
            top_scores.append(scores)
            level_ids.append(torch.full((k,), level, dtype=torch.int64, device=boxes.device))
        top_boxes, top_scores, level_ids = torch.cat(top_boxes, 1), torch.cat(top_scores, 1), torch.cat(level_ids)
        proposals = []
        for n, (height, width) in enumerate(image_sizes):
            boxes, scores, levels = top_boxes[n], top_scores[n], level_ids
            finite = torch.isfinite(boxes).all(dim=1) & torch.isfinite(scores)
            if not finite.all():
                if self.training:
                    raise FloatingPointError("the RPN predicted non-finite boxes or scores: the training diverged")
                boxes, scores, levels = boxes[finite], scores[finite], levels[finite]
            boxes = clip_boxes(boxes, height, width)
            keep = nonempty(boxes, self.min_box_size)
            boxes, scores, levels = boxes[keep], scores[keep], levels[keep]
            keep = batched_nms(boxes.float(), scores, levels, self.nms_thresh)[:post_topk]
            proposals.append((boxes[keep], scores[keep]))
        return proposals

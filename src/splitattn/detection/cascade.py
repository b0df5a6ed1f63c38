"""Cascade R-CNN RoI heads on torchvision ops (torchvision has none).

Follows detectron2's ``CascadeROIHeads`` (Cai & Vasconcelos 2018), as the paper's Cascade results
used: three stages trained at IoU 0.5 / 0.6 / 0.7, each with its own box head and a class-agnostic
box regressor whose deltas are scaled by the stage's box-coder weights (10,10,5,5), (20,20,10,10),
(30,30,15,15). Stage 1 samples 512 RoIs per image (25 % positive) from the RPN proposals plus the
ground truth; stage k > 1 takes every box stage k-1 predicted (detached, clipped, non-empty) and
labels it at its own IoU without re-sampling. Each stage's input features get their gradient scaled
by 1/stages; stage losses are summed with per-stage weights. At test time the class scores are the
mean of the three stages' softmax and the boxes are the last stage's. The mask branch (Cascade Mask
R-CNN) trains on the stage-1 positives and predicts on the final boxes, as detectron2 does.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection.roi_heads import RoIHeads, maskrcnn_inference, maskrcnn_loss
from torchvision.ops import boxes as box_ops

CASCADE_IOUS = (0.5, 0.6, 0.7)
CASCADE_BOX_WEIGHTS = ((10.0, 10.0, 5.0, 5.0), (20.0, 20.0, 10.0, 10.0), (30.0, 30.0, 15.0, 15.0))


class _ScaleGradient(torch.autograd.Function):
    """Identity forward, gradient × scale backward: the stages share the features' gradient budget."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad * ctx.scale, None


class ClassAgnosticPredictor(nn.Module):
    """Class scores (classes + background) and one box-delta vector per RoI."""

    def __init__(self, in_channels: int, num_classes: int):
        super().__init__()
        self.cls_score = nn.Linear(in_channels, num_classes)
        self.bbox_pred = nn.Linear(in_channels, 4)
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.zeros_(self.cls_score.bias)
        nn.init.zeros_(self.bbox_pred.bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.flatten(1)
        return self.cls_score(x), self.bbox_pred(x)


def class_agnostic_loss(class_logits: torch.Tensor, box_deltas: torch.Tensor, labels: torch.Tensor,
                        regression_targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """torchvision's Fast R-CNN loss (CE + smooth-L1 β=1/9 over positives / all RoIs) for one delta per RoI."""
    classification = F.cross_entropy(class_logits, labels)
    positive = labels > 0
    box = F.smooth_l1_loss(box_deltas[positive], regression_targets[positive], beta=1 / 9, reduction="sum")
    return classification, box / max(labels.numel(), 1)


class CascadeRoIHeads(RoIHeads):
    """Drop-in for torchvision's ``RoIHeads`` (same calling convention and outputs) with a cascade."""

    def __init__(
        self,
        box_roi_pool: nn.Module,
        box_heads: Sequence[nn.Module],
        box_predictors: Sequence[nn.Module],
        stage_ious: Sequence[float] = CASCADE_IOUS,
        stage_box_weights: Sequence[Sequence[float]] = CASCADE_BOX_WEIGHTS,
        stage_loss_weights: Sequence[float] = (1.0, 1.0, 1.0),
        batch_size_per_image: int = 512,
        positive_fraction: float = 0.25,
        score_thresh: float = 0.05,
        nms_thresh: float = 0.5,
        detections_per_img: int = 100,
        mask_roi_pool: nn.Module | None = None,
        mask_head: nn.Module | None = None,
        mask_predictor: nn.Module | None = None,
    ):
        stages = len(box_heads)
        if not (stages == len(box_predictors) == len(stage_ious) == len(stage_box_weights) == len(stage_loss_weights)):
            raise ValueError("box_heads, box_predictors, stage_ious, stage_box_weights and stage_loss_weights "
                             "need one entry per stage")
        super().__init__(box_roi_pool, None, None, stage_ious[0], stage_ious[0], batch_size_per_image,
                         positive_fraction, tuple(stage_box_weights[0]), score_thresh, nms_thresh,
                         detections_per_img, mask_roi_pool, mask_head, mask_predictor)
        self.box_heads = nn.ModuleList(box_heads)
        self.box_predictors = nn.ModuleList(box_predictors)
        self.stage_coders = [det_utils.BoxCoder(tuple(w)) for w in stage_box_weights]
        self.stage_matchers = [det_utils.Matcher(iou, iou, allow_low_quality_matches=False) for iou in stage_ious]
        self.stage_loss_weights = [float(w) for w in stage_loss_weights]

    @property
    def num_stages(self) -> int:
        return len(self.box_heads)

    # ------------------------------------------------------------------ one stage
    def _run_stage(self, stage: int, features, proposals: list[torch.Tensor], image_shapes):
        x = self.box_roi_pool(features, proposals, image_shapes)
        if self.training:
            x = _ScaleGradient.apply(x, 1.0 / self.num_stages)
        return self.box_predictors[stage](self.box_heads[stage](x))

    def _decode(self, stage: int, deltas: torch.Tensor, proposals: list[torch.Tensor], image_shapes):
        boxes = self.stage_coders[stage].decode(deltas, proposals).squeeze(1)
        per_image = boxes.split([len(p) for p in proposals])
        return [box_ops.clip_boxes_to_image(b, shape) for b, shape in zip(per_image, image_shapes)]

    def _label(self, stage: int, proposals: list[torch.Tensor], targets: list[dict[str, torch.Tensor]]):
        """Labels and regression targets of later-stage boxes at this stage's IoU (no sampling)."""
        labels, matched_boxes = [], []
        for boxes, target in zip(proposals, targets):
            gt_boxes, gt_labels = target["boxes"].to(boxes.dtype), target["labels"]
            if gt_boxes.numel() == 0:
                labels.append(torch.zeros(len(boxes), dtype=torch.int64, device=boxes.device))
                matched_boxes.append(torch.zeros_like(boxes))
                continue
            matched = self.stage_matchers[stage](box_ops.box_iou(gt_boxes, boxes))
            image_labels = gt_labels[matched.clamp(min=0)].clone()
            image_labels[matched < 0] = 0
            labels.append(image_labels)
            matched_boxes.append(gt_boxes[matched.clamp(min=0)])
        targets_encoded = self.stage_coders[stage].encode(matched_boxes, proposals)
        return torch.cat(labels), torch.cat(targets_encoded)

    # ------------------------------------------------------------------ public
    def forward(self, features, proposals, image_shapes, targets=None):
        if self.training:
            if targets is None:
                raise ValueError("targets are needed in training mode")
            sampled, matched_idxs, labels, regression_targets = self.select_training_samples(proposals, targets)
            losses = self._cascade_losses(features, sampled, labels, regression_targets, image_shapes, targets)
            if self.has_mask():
                losses.update(self._mask_loss(features, sampled, matched_idxs, labels, image_shapes, targets))
            return [], losses
        boxes, scores = self.predict_stages(features, proposals, image_shapes)
        result = self._postprocess(boxes[-1], scores, image_shapes)
        if self.has_mask():
            mask_logits = self.mask_predictor(self.mask_head(
                self.mask_roi_pool(features, [r["boxes"] for r in result], image_shapes)))
            for probs, r in zip(maskrcnn_inference(mask_logits, [r["labels"] for r in result]), result):
                r["masks"] = probs
        return result, {}

    def _cascade_losses(self, features, proposals, labels, regression_targets, image_shapes, targets):
        losses: dict[str, torch.Tensor] = {}
        stage_labels, stage_targets = torch.cat(labels), torch.cat(regression_targets)
        previous: list[torch.Tensor] = []
        for stage in range(self.num_stages):
            if stage > 0:
                proposals = [b[box_ops.remove_small_boxes(b, 1e-3)] for b in previous]
                stage_labels, stage_targets = self._label(stage, proposals, targets)
            class_logits, deltas = self._run_stage(stage, features, proposals, image_shapes)
            loss_cls, loss_box = class_agnostic_loss(class_logits, deltas, stage_labels, stage_targets)
            weight = self.stage_loss_weights[stage]
            losses[f"loss_classifier_stage{stage + 1}"] = weight * loss_cls
            losses[f"loss_box_reg_stage{stage + 1}"] = weight * loss_box
            if stage + 1 < self.num_stages:
                previous = [b.detach() for b in self._decode(stage, deltas.detach(), proposals, image_shapes)]
        return losses

    def _mask_loss(self, features, proposals, matched_idxs, labels, image_shapes, targets):
        positives = [torch.where(image_labels > 0)[0] for image_labels in labels]
        mask_proposals = [p[i] for p, i in zip(proposals, positives)]
        mask_matched = [m[i] for m, i in zip(matched_idxs, positives)]
        logits = self.mask_predictor(self.mask_head(self.mask_roi_pool(features, mask_proposals, image_shapes)))
        loss = maskrcnn_loss(logits, mask_proposals, [t["masks"] for t in targets], [t["labels"] for t in targets],
                             mask_matched)
        return {"loss_mask": loss}

    def predict_stages(self, features, proposals: list[torch.Tensor], image_shapes):
        """Per-stage boxes (a list per stage of per-image tensors) and the stage-averaged class scores.

        Outputs keep their gradient (as torchvision's detectors and detectron2's cascade); each stage's boxes
        enter the next stage detached, as in training.
        """
        stage_boxes, stage_scores = [], []
        for stage in range(self.num_stages):
            class_logits, deltas = self._run_stage(stage, features, proposals, image_shapes)
            stage_scores.append(F.softmax(class_logits, -1))
            boxes = self._decode(stage, deltas, proposals, image_shapes)
            stage_boxes.append(boxes)
            proposals = [b.detach() for b in boxes]
        return stage_boxes, torch.stack(stage_scores).mean(0)

    def _postprocess(self, boxes: list[torch.Tensor], scores: torch.Tensor, image_shapes):
        """Per-class score threshold, small-box removal, per-class NMS, top-k (as torchvision's RoIHeads)."""
        results = []
        num_classes = scores.shape[-1]
        for image_boxes, image_scores in zip(boxes, scores.split([len(b) for b in boxes])):
            labels = torch.arange(1, num_classes, device=scores.device).expand(len(image_boxes), -1).reshape(-1)
            flat_boxes = image_boxes[:, None, :].expand(-1, num_classes - 1, -1).reshape(-1, 4)
            flat_scores = image_scores[:, 1:].reshape(-1)
            keep = torch.where(flat_scores > self.score_thresh)[0]
            flat_boxes, flat_scores, labels = flat_boxes[keep], flat_scores[keep], labels[keep]
            keep = box_ops.remove_small_boxes(flat_boxes, min_size=1e-2)
            flat_boxes, flat_scores, labels = flat_boxes[keep], flat_scores[keep], labels[keep]
            keep = box_ops.batched_nms(flat_boxes, flat_scores, labels, self.nms_thresh)[: self.detections_per_img]
            results.append({"boxes": flat_boxes[keep], "labels": labels[keep], "scores": flat_scores[keep]})
        return results

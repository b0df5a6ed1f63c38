"""detectron2's ``StandardROIHeads`` and ``CascadeROIHeads`` (box and mask branches).

Source: facebookresearch/detectron2 ``detectron2/modeling/roi_heads/{roi_heads.py,cascade_rcnn.py,
fast_rcnn.py,mask_head.py}``; Cascade R-CNN is Cai & Vasconcelos, arXiv 1712.00726. Classes are 0..C-1
with background C inside the heads (detectron2's layout); the detector adds 1 for torchvision's labels.
Cascade detections keep their gradient (detectron2 runs its test path without ``no_grad`` too).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import batched_nms, roi_align

from .boxes import BoxCoder, Matcher, RoIPooler, clip_boxes, nonempty, pairwise_iou, smooth_l1_sum, subsample_labels
from .heads import BoxPredictor, ConvFCBoxHead, MaskHead

# logit of the ground-truth boxes appended to the proposals (detectron2: log((1 - 1e-10) / 1e-10))
GT_PROPOSAL_LOGIT = math.log((1.0 - 1e-10) / (1 - (1.0 - 1e-10)))
CASCADE_IOUS = (0.5, 0.6, 0.7)
CASCADE_BOX_WEIGHTS = ((10.0, 10.0, 5.0, 5.0), (20.0, 20.0, 10.0, 10.0), (30.0, 30.0, 15.0, 15.0))


@dataclass
class Sampled:
    """One image's RoIs as the heads' losses see them (detectron2 keeps these fields on ``Instances``)."""

    boxes: torch.Tensor       # (R, 4) proposal boxes, no gradient
    gt_classes: torch.Tensor  # (R,) 0..C-1 foreground, C background
    gt_boxes: torch.Tensor    # (R, 4) the matched ground-truth box (placeholder where background)
    gt_index: torch.Tensor    # (R,) index of the matched ground truth, for its mask


@dataclass
class Detections:
    """One image's detections in the network's input frame: classes 0..C-1, ``mask_probs`` (N, 1, M, M)."""

    boxes: torch.Tensor
    scores: torch.Tensor
    classes: torch.Tensor
    mask_probs: torch.Tensor | None = None


def fast_rcnn_inference(boxes: torch.Tensor, scores: torch.Tensor, image_size: tuple[int, int],
                        score_thresh: float, nms_thresh: float, topk: int) -> Detections:
    """``fast_rcnn_inference_single_image``: per-class score threshold, clip, class-wise NMS, top-k by score."""
    finite = torch.isfinite(boxes).all(dim=1) & torch.isfinite(scores).all(dim=1)
    if not finite.all():
        boxes, scores = boxes[finite], scores[finite]
    scores = scores[:, :-1]
    per_class = boxes.shape[1] // 4
    boxes = clip_boxes(boxes.reshape(-1, 4), *image_size).view(-1, per_class, 4)
    keep_mask = scores > score_thresh
    index = keep_mask.nonzero()
    boxes = boxes[index[:, 0], 0] if per_class == 1 else boxes[keep_mask]
    scores = scores[keep_mask]
    keep = batched_nms(boxes.float(), scores, index[:, 1], nms_thresh)
    if topk >= 0:
        keep = keep[:topk]
    return Detections(boxes[keep], scores[keep], index[keep, 1])


def crop_and_resize_masks(masks: torch.Tensor, gt_index: torch.Tensor, boxes: torch.Tensor,
                          size: int) -> torch.Tensor:
    """``BitMasks.crop_and_resize``: each box's ground-truth mask RoI-aligned (aligned=True) to size², ≥ 0.5."""
    rois = torch.cat([gt_index.to(boxes.dtype)[:, None], boxes], dim=1)
    out = roi_align(masks[:, None].to(torch.float32), rois, (size, size), 1.0, 0, aligned=True)
    return out.squeeze(1) >= 0.5


class _ScaleGradient(torch.autograd.Function):
    """Identity forward, gradient × scale backward: each cascade stage's share of the shared features."""

    @staticmethod
    def forward(ctx, x, scale):
        ctx.scale = scale
        return x

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.scale, None


class StandardRoIHeads(nn.Module):
    """Box head (+ mask head) on FPN P2–P5: detectron2's ``StandardROIHeads`` with the paper's settings.

    ``forward(features, proposals, image_sizes, targets)``: in training ``targets`` are per-image dicts with
    ``boxes`` (G, 4), ``classes`` (G,) 0..C-1 and, for masks, ``masks`` (G, H, W) in the network's frame;
    returns the losses. At eval returns a :class:`Detections` per image.
    """

    def __init__(self, num_classes: int, channels: int = 256, strides: tuple[int, ...] = (4, 8, 16, 32), *,
                 num_conv: int = 4, conv_dim: int = 256, num_fc: int = 1, fc_dim: int = 1024, norm: str = "none",
                 mask: bool = False, mask_num_conv: int = 4, mask_conv_dim: int = 256, mask_norm: str | None = None,
                 batch_size_per_image: int = 512, positive_fraction: float = 0.25, score_thresh: float = 0.05,
                 nms_thresh: float = 0.5, detections_per_image: int = 100,
                 box_weights: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0),
                 smooth_l1_beta: float = 0.0, proposal_append_gt: bool = True, sampling_ratio: int = 0):
        super().__init__()
        self.num_classes = num_classes
        self.box_pooler = RoIPooler(7, strides, sampling_ratio)
        self.box_head = self._box_head(channels, num_conv, conv_dim, num_fc, fc_dim, norm)
        self.box_predictor = self._box_predictor(self.box_head, num_classes)
        self.box_coder = BoxCoder(box_weights)
        self.proposal_matcher = Matcher([0.5], [0, 1])
        self.batch_size_per_image, self.positive_fraction = batch_size_per_image, positive_fraction
        self.score_thresh, self.nms_thresh, self.detections_per_image = score_thresh, nms_thresh, detections_per_image
        self.smooth_l1_beta, self.proposal_append_gt = smooth_l1_beta, proposal_append_gt
        self.mask_on = mask
        if mask:
            self.mask_pooler = RoIPooler(14, strides, sampling_ratio)
            # (the panoptic configs normalise the box head but not the mask head)
            self.mask_head = self._mask_head(channels, num_classes, mask_num_conv, mask_conv_dim, mask_norm or norm)

    def _box_head(self, channels, num_conv, conv_dim, num_fc, fc_dim, norm) -> nn.Module:
        return ConvFCBoxHead(channels, 7, num_conv, conv_dim, num_fc, fc_dim, norm)

    def _box_predictor(self, box_head, num_classes) -> nn.Module:
        return BoxPredictor(box_head.out_features, num_classes)

    def _mask_head(self, channels, num_classes, num_conv, conv_dim, norm) -> nn.Module:
        return MaskHead(channels, num_classes, num_conv, conv_dim, norm)

    # ----- training
    @torch.no_grad()
    def label_and_sample(self, proposals: list[torch.Tensor], targets: list[dict]) -> list[Sampled]:
        """Append the ground truth to the proposals, match at IoU 0.5, sample 512 RoIs (≤ 25 % foreground)."""
        sampled = []
        for boxes, target in zip(proposals, targets, strict=True):
            gt_boxes, gt_classes = target["boxes"], target["classes"]
            if self.proposal_append_gt:
                boxes = torch.cat([boxes, gt_boxes.to(boxes.dtype)])
            index, labels = self.proposal_matcher(pairwise_iou(gt_boxes, boxes))
            if len(gt_boxes):
                classes = gt_classes[index].clone()
                classes[labels == 0] = self.num_classes
                classes[labels == -1] = -1
            else:
                classes = torch.zeros_like(index) + self.num_classes
            fg, bg = subsample_labels(classes, self.batch_size_per_image, self.positive_fraction, self.num_classes)
            keep = torch.cat([fg, bg])
            matched = gt_boxes[index[keep]] if len(gt_boxes) else boxes[keep]
            sampled.append(Sampled(boxes[keep], classes[keep], matched, index[keep]))
        return sampled

    def box_losses(self, predictions, sampled: list[Sampled], coder: BoxCoder) -> dict[str, torch.Tensor]:
        """``FastRCNNOutputLayers.losses``: mean cross-entropy; L1 on foreground deltas / number of RoIs."""
        scores, deltas = predictions
        gt_classes = torch.cat([s.gt_classes for s in sampled])
        boxes = torch.cat([s.boxes for s in sampled])
        gt_boxes = torch.cat([s.gt_boxes for s in sampled])
        loss_cls = F.cross_entropy(scores, gt_classes, reduction="mean") if len(gt_classes) else scores.sum() * 0
        fg = torch.nonzero((gt_classes >= 0) & (gt_classes < self.num_classes), as_tuple=True)[0]
        if deltas.shape[1] == 4:
            fg_deltas = deltas[fg]
        else:
            fg_deltas = deltas.view(-1, self.num_classes, 4)[fg, gt_classes[fg]]
        loss_box = smooth_l1_sum(fg_deltas, coder.encode(boxes[fg], gt_boxes[fg]), self.smooth_l1_beta)
        return {"loss_cls": loss_cls, "loss_box_reg": loss_box / max(gt_classes.numel(), 1.0)}

    def mask_losses(self, features: list[torch.Tensor], sampled: list[Sampled], targets: list[dict],
                    head: nn.Module | None = None):
        """``mask_rcnn_loss``: per-pixel BCE of the ground-truth class's 28² logits on foreground RoIs."""
        fg = [torch.nonzero((s.gt_classes >= 0) & (s.gt_classes != self.num_classes), as_tuple=True)[0]
              for s in sampled]
        head = head or self.mask_head
        logits = head(self.mask_pooler(features, [s.boxes[i] for s, i in zip(sampled, fg, strict=True)]))
        if sum(len(i) for i in fg) == 0:
            return {"loss_mask": logits.sum() * 0}
        size = logits.shape[-1]
        gt = torch.cat([crop_and_resize_masks(t["masks"], s.gt_index[i], s.boxes[i], size)
                        for s, i, t in zip(sampled, fg, targets, strict=True) if len(i)])
        classes = torch.cat([s.gt_classes[i] for s, i in zip(sampled, fg, strict=True)])
        logits = logits[torch.arange(len(classes), device=logits.device), classes]
        return {"loss_mask": F.binary_cross_entropy_with_logits(logits, gt.to(torch.float32), reduction="mean")}

    def losses(self, features: list[torch.Tensor], sampled: list[Sampled], targets: list[dict]):
        """All head losses for explicitly given RoIs (the parity tests feed detectron2's sample here)."""
        predictions = self.box_predictor(self.box_head(self.box_pooler(features, [s.boxes for s in sampled])))
        losses = self.box_losses(predictions, sampled, self.box_coder)
        if self.mask_on:
            losses.update(self.mask_losses(features, sampled, targets))
        return losses

    # ----- inference
    def predict_boxes(self, features: list[torch.Tensor], proposals: list[torch.Tensor],
                      image_sizes: list[tuple[int, int]]) -> list[Detections]:
        scores, deltas = self.box_predictor(self.box_head(self.box_pooler(features, proposals)))
        counts = [len(p) for p in proposals]
        boxes = self.box_coder.decode(deltas, torch.cat(proposals)).split(counts)
        probs = F.softmax(scores, dim=-1).split(counts)
        return [fast_rcnn_inference(b, p, size, self.score_thresh, self.nms_thresh, self.detections_per_image)
                for b, p, size in zip(boxes, probs, image_sizes, strict=True)]

    def predict_masks(self, features: list[torch.Tensor], detections: list[Detections]) -> None:
        """``mask_rcnn_inference``: the predicted class's sigmoid mask (N, 1, 28, 28), set on each detection."""
        pooled = self.mask_pooler(features, [d.boxes for d in detections])
        classes = torch.cat([d.classes for d in detections])
        index = torch.arange(len(classes), device=pooled.device)
        heads = self.mask_head if isinstance(self.mask_head, nn.ModuleList) else [self.mask_head]
        probs = sum(head(pooled)[index, classes][:, None].sigmoid() for head in heads) / len(heads)
        for d, p in zip(detections, probs.split([len(d.boxes) for d in detections]), strict=True):
            d.mask_probs = p

    def forward_with_given_boxes(self, features: list[torch.Tensor],
                                 detections: list[Detections]) -> list[Detections]:
        """detectron2's ``forward_with_given_boxes`` (eval): the mask head on given boxes and classes, if any."""
        if self.mask_on:
            self.predict_masks(features, detections)
        return detections

    def forward(self, features: list[torch.Tensor], proposals: list[torch.Tensor],
                image_sizes: list[tuple[int, int]], targets: list[dict] | None = None):
        if self.training:
            if targets is None:
                raise ValueError("the RoI heads need targets in training")
            return self.losses(features, self.label_and_sample(proposals, targets), targets)
        detections = self.predict_boxes(features, proposals, image_sizes)
        if self.mask_on:
            self.predict_masks(features, detections)
        return detections


class CascadeRoIHeads(StandardRoIHeads):
    """detectron2's ``CascadeROIHeads``: three class-agnostic box stages at IoU 0.5 / 0.6 / 0.7.

    Stage k refines stage k-1's boxes (detached); the test score is the mean of the stages' softmax, the
    box the last stage's. The mask head (one, as detectron2) trains on stage 1's sampled RoIs.

    ``score_mode='mean_logits'`` and ``mask_per_stage=True`` are mmdetection's ``CascadeRoIHead`` at test
    time (open-mmlab/mmdetection ``mmdet/models/roi_heads/cascade_roi_head.py``): softmax of the stages' mean
    logits, and one mask head per stage whose sigmoid masks are averaged; each stage's mask head then trains
    on that stage's foreground RoIs (mmdet also re-samples RoIs per stage in training; this class does not).
    """

    def __init__(self, num_classes: int, channels: int = 256, strides: tuple[int, ...] = (4, 8, 16, 32), *,
                 stage_ious: tuple[float, ...] = CASCADE_IOUS,
                 stage_weights: tuple[tuple[float, ...], ...] = CASCADE_BOX_WEIGHTS,
                 stage_loss_weights: tuple[float, ...] | None = None, score_mode: str = "mean_probs",
                 mask_per_stage: bool = False, **kwargs):
        if len(stage_ious) != len(stage_weights):
            raise ValueError(f"one box-coder weight set per stage: {len(stage_ious)} IoUs, {len(stage_weights)}")
        if score_mode not in ("mean_probs", "mean_logits"):
            raise ValueError(f"score_mode must be 'mean_probs' (detectron2) or 'mean_logits' (mmdet): {score_mode!r}")
        self.num_stages = len(stage_ious)
        self.mask_per_stage = mask_per_stage
        super().__init__(num_classes, channels, strides, box_weights=stage_weights[0], **kwargs)
        self.stage_coders = [BoxCoder(w) for w in stage_weights]
        self.stage_matchers = [Matcher([iou], [0, 1]) for iou in stage_ious]
        self.stage_loss_weights = tuple(stage_loss_weights or (1.0,) * self.num_stages)
        self.score_mode = score_mode

    def _mask_head(self, channels, num_classes, num_conv, conv_dim, norm) -> nn.Module:
        if not self.mask_per_stage:
            return super()._mask_head(channels, num_classes, num_conv, conv_dim, norm)
        return nn.ModuleList(MaskHead(channels, num_classes, num_conv, conv_dim, norm) for _ in range(self.num_stages))

    def _box_head(self, channels, num_conv, conv_dim, num_fc, fc_dim, norm) -> nn.Module:
        return nn.ModuleList(ConvFCBoxHead(channels, 7, num_conv, conv_dim, num_fc, fc_dim, norm)
                             for _ in range(self.num_stages))

    def _box_predictor(self, box_head, num_classes) -> nn.Module:
        return nn.ModuleList(BoxPredictor(h.out_features, num_classes, class_agnostic=True) for h in box_head)

    def _run_stage(self, features, boxes: list[torch.Tensor], stage: int):
        pooled = self.box_pooler(features, boxes)
        if self.training:
            pooled = _ScaleGradient.apply(pooled, 1.0 / self.num_stages)
        return self.box_predictor[stage](self.box_head[stage](pooled))

    @torch.no_grad()
    def _match(self, boxes: list[torch.Tensor], targets: list[dict], stage: int) -> list[Sampled]:
        """Label every refined box at this stage's IoU (no sampling in later stages)."""
        out = []
        for b, target in zip(boxes, targets, strict=True):
            gt_boxes, gt_classes = target["boxes"], target["classes"]
            index, labels = self.stage_matchers[stage](pairwise_iou(gt_boxes, b))
            if len(gt_boxes):
                classes = gt_classes[index].clone()
                classes[labels == 0] = self.num_classes
                matched = gt_boxes[index]
            else:
                classes, matched = torch.zeros_like(index) + self.num_classes, b.new_zeros((len(b), 4))
            out.append(Sampled(b, classes, matched, index))
        return out

    def _refine(self, predictions, boxes: list[torch.Tensor], stage: int, image_sizes) -> list[torch.Tensor]:
        """This stage's predicted boxes, detached and clipped: the next stage's proposals."""
        decoded = self.stage_coders[stage].decode(predictions[1], torch.cat(boxes)).detach()
        out = []
        for b, (height, width) in zip(decoded.split([len(b) for b in boxes]), image_sizes, strict=True):
            b = clip_boxes(b, height, width)
            out.append(b[nonempty(b)] if self.training else b)
        return out

    def losses(self, features, sampled: list[Sampled], targets: list[dict]):
        losses, stage_rois, predictions = {}, sampled, None
        image_sizes = [t["image_size"] for t in targets]
        for stage in range(self.num_stages):
            if stage > 0:
                stage_rois = self._match(self._refine(predictions, [s.boxes for s in stage_rois], stage - 1,
                                                      image_sizes), targets, stage)
            predictions = self._run_stage(features, [s.boxes for s in stage_rois], stage)
            stage_losses = self.box_losses(predictions, stage_rois, self.stage_coders[stage])
            if self.mask_on and self.mask_per_stage:
                stage_losses.update(self.mask_losses(features, stage_rois, targets, self.mask_head[stage]))
            weight = self.stage_loss_weights[stage]
            losses.update({f"{name}_stage{stage}": value * weight if weight != 1.0 else value
                           for name, value in stage_losses.items()})
        if self.mask_on and not self.mask_per_stage:
            losses.update(self.mask_losses(features, sampled, targets))
        return losses

    def predict_boxes(self, features, proposals, image_sizes) -> list[Detections]:
        boxes, probs, predictions = proposals, [], None
        for stage in range(self.num_stages):
            if stage > 0:
                boxes = self._refine(predictions, boxes, stage - 1, image_sizes)
            predictions = self._run_stage(features, boxes, stage)
            stage_scores = predictions[0] if self.score_mode == "mean_logits" else F.softmax(predictions[0], dim=-1)
            probs.append(stage_scores.split([len(b) for b in boxes]))
        if self.score_mode == "mean_logits":
            scores = [F.softmax(sum(per_stage) / float(self.num_stages), dim=-1)
                      for per_stage in zip(*probs, strict=True)]
        else:
            scores = [sum(per_stage) * (1.0 / self.num_stages) for per_stage in zip(*probs, strict=True)]
        final = self.stage_coders[-1].decode(predictions[1], torch.cat(boxes)).split([len(b) for b in boxes])
        return [fast_rcnn_inference(b, s, size, self.score_thresh, self.nms_thresh, self.detections_per_image)
                for b, s, size in zip(final, scores, image_sizes, strict=True)]

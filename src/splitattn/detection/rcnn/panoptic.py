"""Panoptic FPN: the R-CNN's instances, the semantic head's stuff, combined as detectron2 combines them.

Source: facebookresearch/detectron2 ``detectron2/modeling/meta_arch/panoptic_fpn.py`` (``PanopticFPN``,
``combine_semantic_and_instance_outputs``, which follows panopticapi's
``combine_semantic_and_instance_predictions.py``); Kirillov et al., "Panoptic Feature Pyramid Networks"
(arXiv 1901.02446). The paper's ResNeSt-200 row (PQ 47.90) is this model with a cascade instance branch.

Outputs per image, in eval mode: the R-CNN's ``boxes`` / ``labels`` / ``scores`` / ``masks``, ``sem_seg``
(C, H, W logits at the input's size) and ``panoptic_seg`` (H, W int32, 0 = void) with ``segments_info``
in detectron2's form: ``{"id", "isthing", "category_id", "score", "instance_id"}`` for things (category =
label − 1, detectron2's contiguous thing id) and ``{"id", "isthing": False, "category_id", "area"}`` for stuff
(the semantic class, 1..53 in COCO's "separated" setting; class 0 stands for all things and is never a
segment). :func:`splitattn.detection.panoptic_format.to_coco_panoptic` turns them into COCO panoptic files.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .model import DetectronRCNN
from .semantic import SemSegFPNHead, sem_seg_postprocess


def combine_semantic_and_instances(scores: torch.Tensor, labels: torch.Tensor, masks: torch.Tensor,
                                   semantic: torch.Tensor, overlap_thresh: float = 0.5,
                                   stuff_area_thresh: int = 4096, instances_score_thresh: float = 0.5
                                   ) -> tuple[torch.Tensor, list[dict]]:
    """detectron2's combination: instances by falling score (each keeping what earlier ones left it, dropped
    when more than ``overlap_thresh`` of it is taken), then each stuff class on the still-empty pixels if it
    covers at least ``stuff_area_thresh`` of them.

    Args:
        scores, labels: the instances' scores and labels (1..C, ours: background-free, one-based).
        masks: (N, H, W) bool instance masks at the image's size.
        semantic: (H, W) semantic class per pixel (the argmax of ``sem_seg``); 0 = things.
    """
    panoptic = torch.zeros_like(semantic, dtype=torch.int32)
    segments: list[dict] = []
    current = 0
    for index in torch.argsort(-scores):  # detectron2's call: ties break the same way
        score = scores[index].item()
        if score < instances_score_thresh:
            break
        mask = masks[index]
        area = mask.sum().item()
        if area == 0:
            continue
        taken = (mask & (panoptic > 0)).sum().item()
        if taken * 1.0 / area > overlap_thresh:
            continue
        if taken > 0:
            mask = mask & (panoptic == 0)
        current += 1
        panoptic[mask] = current
        segments.append({"id": current, "isthing": True, "score": score,
                         "category_id": int(labels[index].item()) - 1, "instance_id": int(index.item())})
    for label in torch.unique(semantic).cpu().tolist():
        if label == 0:  # the "things" class: instances speak for it
            continue
        mask = (semantic == label) & (panoptic == 0)
        area = mask.sum().item()
        if area < stuff_area_thresh:
            continue
        current += 1
        panoptic[mask] = current
        segments.append({"id": current, "isthing": False, "category_id": label, "area": area})
    return panoptic, segments


class PanopticFPN(DetectronRCNN):
    """A mask R-CNN (standard or cascade) plus ``sem_seg_head``; detectron2's names, so its files load by name.

    Training targets add ``sem_seg`` (H, W) int64 per image: detectron2's "separated" labels (0 = things,
    1.. = stuff, 255 = ignore). The losses are the R-CNN's plus ``loss_sem_seg`` (weighted by the head's
    ``loss_weight``: 0.5 in the ResNeSt panoptic configs).
    """

    def __init__(self, backbone, proposal_generator, roi_heads, sem_seg_head: SemSegFPNHead, *,
                 overlap_thresh: float = 0.5, stuff_area_thresh: int = 4096, instances_score_thresh: float = 0.5,
                 **kwargs):
        super().__init__(backbone, proposal_generator, roi_heads, **kwargs)
        if not getattr(roi_heads, "mask_on", False):
            raise ValueError("Panoptic FPN needs instance masks: build it on a mask R-CNN")
        self.sem_seg_head = sem_seg_head
        self.overlap_thresh, self.stuff_area_thresh = overlap_thresh, stuff_area_thresh
        self.instances_score_thresh = instances_score_thresh

    @classmethod
    def from_rcnn(cls, rcnn: DetectronRCNN, sem_seg_head: SemSegFPNHead, **combine) -> PanopticFPN:
        """Wrap a built mask R-CNN (its modules and resize settings are shared, not copied)."""
        return cls(rcnn.backbone, rcnn.proposal_generator, rcnn.roi_heads, sem_seg_head,
                   pixel_mean=rcnn.pixel_mean.flatten().tolist(), pixel_std=rcnn.pixel_std.flatten().tolist(),
                   train_sizes=rcnn.train_sizes, max_size_train=rcnn.max_size_train, test_size=rcnn.test_size,
                   max_size_test=rcnn.max_size_test, **combine)

    def semantic_targets(self, targets: list[dict], sizes, padded: tuple[int, int]) -> torch.Tensor:
        """Each ``sem_seg`` resized with its image (nearest), padded with the ignore value to the batch's size."""
        out = torch.full((len(targets), *padded), self.sem_seg_head.ignore_value, dtype=torch.int64,
                         device=self.pixel_mean.device)
        for i, (target, (h, w)) in enumerate(zip(targets, sizes, strict=True)):
            labels = target["sem_seg"][None, None].to(torch.float32)
            out[i, :h, :w] = F.interpolate(labels, (h, w), mode="nearest-exact")[0, 0].to(torch.int64)
        return out

    def forward(self, images: list[torch.Tensor], targets: list[dict] | None = None):
        if self.training and targets is None:
            raise ValueError("in training mode Panoptic FPN needs targets (boxes, labels, masks, sem_seg) per image")
        if self.training and any("sem_seg" not in t for t in targets):
            raise ValueError("Panoptic FPN trains on targets with 'sem_seg' (H, W) labels as well: 0 = things, "
                             "1.. = stuff classes, 255 = ignore")
        originals = [(int(im.shape[-2]), int(im.shape[-1])) for im in images]
        batch, sizes = self.normalize_and_pad([self.resize(im) for im in images])
        features = self.features(batch)
        levels = features[: len(self.sem_seg_head.in_features)]
        if self.training:
            losses = self.sem_seg_head.losses(levels, self.semantic_targets(targets, sizes, batch.shape[-2:]))
            heads_targets = self.targets_for(targets, originals, sizes)
            proposals, rpn_losses = self.proposal_generator(features, sizes, [t["boxes"] for t in heads_targets])
            losses.update(rpn_losses)
            losses.update(self.roi_heads(features[:-1], [p for p, _ in proposals], sizes, heads_targets))
            return losses
        logits = self.sem_seg_head(levels)
        proposals, _ = self.proposal_generator(features, sizes)
        detections = self.roi_heads(features[:-1], [p for p, _ in proposals], sizes)
        results = []
        for i, (d, size, (height, width)) in enumerate(zip(detections, sizes, originals, strict=True)):
            out = self.postprocess(d, size, (height, width))
            out["sem_seg"] = sem_seg_postprocess(logits[i], size, height, width)
            out["panoptic_seg"], out["segments_info"] = combine_semantic_and_instances(
                out["scores"], out["labels"], out["masks"][:, 0] >= 0.5, out["sem_seg"].argmax(dim=0),
                self.overlap_thresh, self.stuff_area_thresh, self.instances_score_thresh)
            results.append(out)
        return results

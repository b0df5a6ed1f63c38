"""Multi-scale + horizontal-flip test-time augmentation of the detectron2-flavoured R-CNNs.

Step for step detectron2's ``GeneralizedRCNNWithTTA`` and ``DatasetMapperTTA``
(facebookresearch/detectron2 ``detectron2/modeling/test_time_augmentation.py``; defaults from
``detectron2/config/defaults.py``: ``TEST.AUG.MIN_SIZES`` 400..1200 by 100, ``MAX_SIZE`` 4000, ``FLIP`` True),
which the official ResNeSt ``d2/train_net.py`` runs when ``TEST.AUG.ENABLED`` (the "multi-scale" test-dev rows):

1. one augmented image per short side, in order ``size``, ``size`` flipped, next size, …: the image (0–255) is
   resized once per size from the input (``ResizeShortestEdge``: bilinear as detectron2 resizes float
   images), the flipped copy is that resized image mirrored;
2. the detector runs on them in batches of ``batch_size`` (3, detectron2's default; images of one batch are
   padded together, which changes their features) without post-processing and without the mask head;
3. every augmentation's boxes go back to the input frame (flip undone, then scaled), and the union is merged
   by ``fast_rcnn_inference_single_image`` on a score matrix holding each box's score in its class column:
   score threshold 1e-8, the model's NMS threshold and detections per image;
4. mask models: the merged boxes go into each augmented frame, the mask head runs on them
   (``forward_with_given_boxes``, the backbone run again in the same batches), the 28×28 probabilities of
   flipped augmentations are mirrored back and all are averaged; then ``detector_postprocess`` (clip, drop
   empty boxes, paste). Box-only models return the merged detections as they are (detectron2 skips
   ``detector_postprocess`` there, so a box clipped to zero width stays).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .model import DetectronRCNN, resized_shape
from .roi_heads import Detections, fast_rcnn_inference

__all__ = ["DEFAULT_MAX_SIZE", "DEFAULT_MIN_SIZES", "DetectionTTA"]

DEFAULT_MIN_SIZES = (400, 500, 600, 700, 800, 900, 1000, 1100, 1200)  # detectron2's TEST.AUG.MIN_SIZES
DEFAULT_MAX_SIZE = 4000                                                # TEST.AUG.MAX_SIZE
MERGE_SCORE_THRESH = 1e-8                                              # _merge_detections' score threshold


@dataclass
class Augmented:
    """One augmented input: ``image`` 0–255 CHW and the chain that made it from the input of ``forward``.

    ``input_hw`` → (``pre_hw``, when the image was first resized to the model's test size) → ``image``'s
    size, then mirrored when ``flip``.
    """

    image: torch.Tensor
    input_hw: tuple[int, int]
    pre_hw: tuple[int, int] | None
    flip: bool

    @property
    def hw(self) -> tuple[int, int]:
        return int(self.image.shape[-2]), int(self.image.shape[-1])

    def _steps(self) -> list[tuple]:
        """The forward chain: ("resize", from_hw, to_hw) and ("hflip", width) steps."""
        steps, source = [], self.input_hw
        if self.pre_hw is not None and self.pre_hw != self.input_hw:
            steps.append(("resize", source, self.pre_hw))
        if self.pre_hw is not None:
            source = self.pre_hw
        steps.append(("resize", source, self.hw))
        if self.flip:
            steps.append(("hflip", self.hw[1]))
        return steps

    def apply_box(self, boxes: torch.Tensor) -> torch.Tensor:
        """Input-frame XYXY boxes → this augmentation's frame (``TransformList.apply_box``)."""
        for step in self._steps():
            boxes = _apply_step(step, boxes)
        return boxes

    def inverse_box(self, boxes: torch.Tensor) -> torch.Tensor:
        """This augmentation's XYXY boxes → the input frame (``tfm.inverse().apply_box``)."""
        for step in reversed(self._steps()):
            if step[0] == "resize":
                step = ("resize", step[2], step[1])
            boxes = _apply_step(step, boxes)
        return boxes


def _apply_step(step: tuple, boxes: torch.Tensor) -> torch.Tensor:
    """fvcore's ``Transform.apply_box``: map the four corners, take their min / max."""
    if step[0] == "resize":
        (h, w), (new_h, new_w) = step[1], step[2]
        x = boxes[:, 0::2] * (new_w * 1.0 / w)  # ResizeTransform.apply_coords, same float32 arithmetic
        y = boxes[:, 1::2] * (new_h * 1.0 / h)
    else:  # HFlipTransform.apply_coords: x → width - x
        x, y = step[1] - boxes[:, 0::2], boxes[:, 1::2]
    return torch.stack((torch.minimum(x[:, 0], x[:, 1]), torch.minimum(y[:, 0], y[:, 1]),
                        torch.maximum(x[:, 0], x[:, 1]), torch.maximum(y[:, 0], y[:, 1])), dim=1)


def _resize(image255: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``ResizeTransform.apply_image`` on a float image: bilinear, ``align_corners=False``."""
    return F.interpolate(image255[None], size, mode="bilinear", align_corners=False)[0]


class DetectionTTA(nn.Module):
    """detectron2's ``GeneralizedRCNNWithTTA`` around a detectron2-flavour detector (:class:`DetectronRCNN`).

    Source: facebookresearch/detectron2 ``detectron2/modeling/test_time_augmentation.py``
    (``GeneralizedRCNNWithTTA``, ``DatasetMapperTTA``); the steps are listed in this module's docstring.
    ``forward(images)`` takes what the detector takes in eval mode (a list of float RGB CHW tensors in
    [0, 1]) and returns what it returns: per image ``boxes`` (N, 4) XYXY in input pixels, ``labels`` 1..C,
    ``scores``[, ``masks`` (N, 1, H, W) probabilities, ``>= 0.5`` is detectron2's mask]. The score threshold
    of each pass, the NMS threshold of each pass and of the merge, and the detections per image are the
    detector's own (detectron2: ``MODEL.ROI_HEADS.SCORE_THRESH_TEST``, ``NMS_THRESH_TEST``,
    ``TEST.DETECTIONS_PER_IMAGE``).

    Args:
        model: from ``create_detector(kind, ..., flavour='detectron2')`` (Faster, Mask, Cascade (Mask) R-CNN).
        min_sizes: short sides, one augmentation each (detectron2's ``TEST.AUG.MIN_SIZES``).
        max_size: longest side of an augmented image (``TEST.AUG.MAX_SIZE``).
        flip: add the horizontally flipped copy of each size (``TEST.AUG.FLIP``).
        batch_size: augmented images per detector call (``GeneralizedRCNNWithTTA(batch_size=3)``).
        pre_resize: first resize each input to the model's test size (``test_size``, ``max_size_test``) and
            augment that image, as the official ``train_net.py`` evaluation does (its test loader resizes to
            ``INPUT.MIN_SIZE_TEST`` before ``GeneralizedRCNNWithTTA`` resizes again). False: augment the input.
    """

    def __init__(self, model: nn.Module, min_sizes: int | Sequence[int] = DEFAULT_MIN_SIZES,
                 max_size: int = DEFAULT_MAX_SIZE, flip: bool = True, batch_size: int = 3, pre_resize: bool = False):
        super().__init__()
        _check_model(model)
        sizes = (min_sizes,) if isinstance(min_sizes, int) else tuple(min_sizes)
        if not sizes:
            raise ValueError("min_sizes is empty: give at least one short side, e.g. detectron2's "
                             f"TEST.AUG.MIN_SIZES {DEFAULT_MIN_SIZES}")
        if not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in sizes):
            raise ValueError(f"min_sizes must be positive integers (short sides in pixels), got {sizes}")
        if isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < 1:
            raise ValueError(f"max_size must be a positive integer (longest side in pixels, detectron2: 4000), "
                             f"got {max_size!r}")
        if not isinstance(flip, bool):
            raise ValueError(f"flip must be True or False, got {flip!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer (detectron2: 3), got {batch_size!r}")
        if not isinstance(pre_resize, bool):
            raise ValueError(f"pre_resize must be True or False, got {pre_resize!r}")
        self.model = model
        self.min_sizes, self.max_size, self.flip = sizes, max_size, flip
        self.batch_size, self.pre_resize = batch_size, pre_resize

    def extra_repr(self) -> str:
        return (f"min_sizes={self.min_sizes}, max_size={self.max_size}, flip={self.flip}, "
                f"batch_size={self.batch_size}, pre_resize={self.pre_resize}")

    def augment(self, image: torch.Tensor) -> list[Augmented]:
        """``DatasetMapperTTA``: each size's resized image (0–255), followed by its mirror when ``flip``."""
        if image.dim() != 3 or image.shape[0] != 3:
            raise ValueError(f"images must be float RGB CHW tensors in [0, 1], got shape {tuple(image.shape)}")
        input_hw = (int(image.shape[1]), int(image.shape[2]))
        source, pre_hw = image * 255.0, None
        if self.pre_resize:  # the model's eval resize, as detectron2's test loader
            pre_hw = resized_shape(*input_hw, self.model.test_size, self.model.max_size_test)
            source = _resize(source, pre_hw)
        out = []
        for size in self.min_sizes:
            resized = _resize(source, resized_shape(source.shape[1], source.shape[2], size, self.max_size))
            out.append(Augmented(resized, input_hw, pre_hw, False))
            if self.flip:
                out.append(Augmented(resized.flip(-1), input_hw, pre_hw, True))
        return out

    def _batched(self, augmented: list[Augmented], detected: list[Detections] | None = None,
                 masks: bool = True) -> list[Detections]:
        """``_batch_inference``: the detector on consecutive groups of ``batch_size`` augmented images."""
        out = []
        for start in range(0, len(augmented), self.batch_size):
            chunk = [a.image for a in augmented[start:start + self.batch_size]]
            given = None if detected is None else detected[start:start + self.batch_size]
            out.extend(self.model.inference(chunk, given, masks=masks))
        return out

    def merge(self, augmented: list[Augmented], detections: list[Detections]) -> Detections:
        """``_get_augmented_boxes`` + ``_merge_detections``: the union in the input frame, class-wise NMS."""
        heads = self.model.roi_heads
        boxes = torch.cat([a.inverse_box(d.boxes) for a, d in zip(augmented, detections, strict=True)])
        scores = torch.cat([d.scores for d in detections])
        classes = torch.cat([d.classes for d in detections])
        table = torch.zeros(len(boxes), heads.num_classes + 1, device=boxes.device)
        table[torch.arange(len(boxes), device=boxes.device), classes] = scores
        return fast_rcnn_inference(boxes, table, augmented[0].input_hw, MERGE_SCORE_THRESH, heads.nms_thresh,
                                   heads.detections_per_image)

    @torch.no_grad()
    def forward(self, images: list[torch.Tensor]) -> list[dict]:
        if self.model.training:
            raise RuntimeError("DetectionTTA runs the detector in eval mode: call .eval() on it (or on the detector)")
        return [self._one(image) for image in images]

    def _one(self, image: torch.Tensor) -> dict:
        augmented = self.augment(image)
        merged = self.merge(augmented, self._batched(augmented, masks=False))
        if not self.model.roi_heads.mask_on:
            return {"boxes": merged.boxes, "labels": merged.classes + 1, "scores": merged.scores}
        given = [Detections(a.apply_box(merged.boxes), merged.scores, merged.classes) for a in augmented]
        with_masks = self._batched(augmented, given)
        probs = [d.mask_probs.flip(-1) if a.flip else d.mask_probs for a, d in zip(augmented, with_masks, strict=True)]
        merged.mask_probs = torch.stack(probs).mean(dim=0)
        input_hw = augmented[0].input_hw
        return self.model.postprocess(merged, input_hw, input_hw)


def _check_model(model: nn.Module) -> None:
    from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN

    if isinstance(model, GeneralizedRCNN):
        raise ValueError("DetectionTTA needs a flavour='detectron2' detector; torchvision-flavour detectors "
                         "(torchvision GeneralizedRCNN) are not supported: build it with create_detector(..., "
                         "flavour='detectron2')")
    if not isinstance(model, DetectronRCNN):
        raise ValueError(f"DetectionTTA wraps a detector from create_detector(kind, ..., flavour='detectron2'), "
                         f"got {type(model).__name__}")
    if hasattr(model, "sem_seg_head"):
        raise ValueError("Panoptic FPN is not supported (nor by detectron2's GeneralizedRCNNWithTTA): wrap a "
                         "Faster, Mask or Cascade (Mask) R-CNN")

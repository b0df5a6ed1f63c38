"""The detectron2-flavoured R-CNN, called as torchvision's detectors are.

``model(images)`` takes a list of float CHW RGB tensors in [0, 1] (any sizes) and returns per image
``{"boxes" (N, 4) XYXY in input pixels, "labels" (N,) 1..C, "scores" (N,)[, "masks" (N, 1, H, W) in 0..1]}``;
``model(images, targets)`` in training takes torchvision's targets (``boxes``, ``labels`` 1..C, ``masks``) and
returns detectron2's losses. Inside, each step is detectron2's (facebookresearch/detectron2
``modeling/meta_arch/rcnn.py``, ``data/transforms/augmentation_impl.py``, ``modeling/postprocessing.py``,
``layers/mask_ops.py``): resize the short edge (×255 first, then bilinear as detectron2 resizes float
images), normalise with 0–255 mean/std, pad to a multiple of 32; scale boxes back, clip, drop empty
ones, paste masks by bilinear sampling at pixel centres.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .boxes import clip_boxes, nonempty
from .roi_heads import Detections

PAD_DIVISIBILITY = 32


def resized_shape(height: int, width: int, short: int, max_size: int) -> tuple[int, int]:
    """``ResizeShortestEdge.get_output_shape``: short edge → ``short``, long edge ≤ ``max_size``, rounded."""
    scale = short * 1.0 / min(height, width)
    new_h, new_w = (short, scale * width) if height < width else (scale * height, short)
    if max(new_h, new_w) > max_size:
        scale = max_size * 1.0 / max(new_h, new_w)
        new_h, new_w = new_h * scale, new_w * scale
    return int(new_h + 0.5), int(new_w + 0.5)


def paste_masks(masks: torch.Tensor, boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(N, 1, M, M) mask probabilities → (N, 1, height, width): detectron2's ``paste_masks_in_image``.

    Each image pixel centre is mapped into its box's mask frame and sampled bilinearly (zero outside);
    ``>= 0.5`` of the result is detectron2's binary mask. Written out because torchvision's paste
    (``expand_masks`` + resize) samples differently.
    """
    if len(masks) == 0:
        return masks.new_zeros((0, 1, height, width))
    x0, y0, x1, y1 = torch.split(boxes.to(torch.float32), 1, dim=1)
    ys = torch.arange(0, height, device=boxes.device, dtype=torch.float32) + 0.5
    xs = torch.arange(0, width, device=boxes.device, dtype=torch.float32) + 0.5
    ys = (ys - y0) / (y1 - y0) * 2 - 1
    xs = (xs - x0) / (x1 - x0) * 2 - 1
    n = len(masks)
    grid = torch.stack([xs[:, None, :].expand(n, height, width), ys[:, :, None].expand(n, height, width)], dim=3)
    return F.grid_sample(masks.float(), grid.to(torch.float32), align_corners=False)


class DetectronRCNN(nn.Module):
    """Backbone (ResNeSt-FPN), ``proposal_generator`` (RPN) and ``roi_heads`` under detectron2's names.

    Each training image draws its short side uniformly from ``train_sizes`` (detectron2's "range" sampling of
    640..800 is ``range(640, 801)``, its "choice" the listed sizes); ``test_size`` at eval.
    """

    def __init__(self, backbone: nn.Module, proposal_generator: nn.Module, roi_heads: nn.Module, *,
                 pixel_mean: Sequence[float] = (123.68, 116.779, 103.939),
                 pixel_std: Sequence[float] = (58.393, 57.12, 57.375),
                 train_sizes: Sequence[int] = tuple(range(640, 801)), max_size_train: int = 1333,
                 test_size: int = 800, max_size_test: int = 1333):
        super().__init__()
        if not train_sizes or min(train_sizes) < 1 or test_size < 1:
            raise ValueError(f"image sizes must be positive, got train {tuple(train_sizes)}, test {test_size}")
        self.backbone, self.proposal_generator, self.roi_heads = backbone, proposal_generator, roi_heads
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), persistent=False)
        self.train_sizes = tuple(train_sizes)
        self.max_size_train, self.test_size, self.max_size_test = max_size_train, test_size, max_size_test

    def _short_side(self) -> int:
        if not self.training:
            return self.test_size
        return self.train_sizes[int(torch.randint(len(self.train_sizes), ()).item())]

    def resize(self, image: torch.Tensor) -> torch.Tensor:
        """One [0, 1] CHW image → 0–255, short side resized (bilinear, as detectron2 resizes float images)."""
        if image.dim() != 3 or image.shape[0] != 3:
            raise ValueError(f"images must be float RGB CHW tensors in [0, 1], got shape {tuple(image.shape)}")
        max_size = self.max_size_train if self.training else self.max_size_test
        size = resized_shape(image.shape[1], image.shape[2], self._short_side(), max_size)
        return F.interpolate(image[None] * 255.0, size, mode="bilinear", align_corners=False)[0]

    def normalize_and_pad(self, images: list[torch.Tensor]) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        """(N, 3, H, W) batch of normalised images, zero-padded to a multiple of 32, and each one's size."""
        sizes = [(int(im.shape[1]), int(im.shape[2])) for im in images]
        height = -(-max(h for h, _ in sizes) // PAD_DIVISIBILITY) * PAD_DIVISIBILITY
        width = -(-max(w for _, w in sizes) // PAD_DIVISIBILITY) * PAD_DIVISIBILITY
        batch = images[0].new_zeros((len(images), 3, height, width))
        for i, im in enumerate(images):
            batch[i, :, : im.shape[1], : im.shape[2]].copy_((im - self.pixel_mean) / self.pixel_std)
        return batch, sizes

    def targets_for(self, targets: list[dict], originals, sizes) -> list[dict]:
        """torchvision targets → the heads' frame: boxes scaled, classes 0..C-1, masks resized (nearest)."""
        out = []
        for target, (h, w), (new_h, new_w) in zip(targets, originals, sizes, strict=True):
            boxes = target["boxes"].to(torch.float32).clone()
            boxes[:, 0::2] *= new_w * 1.0 / w
            boxes[:, 1::2] *= new_h * 1.0 / h
            item = {"boxes": boxes, "classes": target["labels"].to(torch.int64) - 1, "image_size": (new_h, new_w)}
            if "masks" in target:
                masks = target["masks"][:, None].to(torch.float32)
                item["masks"] = F.interpolate(masks, (new_h, new_w), mode="nearest-exact")[:, 0] if len(masks) \
                    else target["masks"].new_zeros((0, new_h, new_w))
            out.append(item)
        return out

    def features(self, batch: torch.Tensor) -> list[torch.Tensor]:
        """FPN P2–P6, finest first."""
        return list(self.backbone(batch).values())

    def forward(self, images: list[torch.Tensor], targets: list[dict] | None = None):
        if self.training and targets is None:
            raise ValueError("in training mode the detector needs targets (boxes, labels[, masks]) per image")
        originals = [(int(im.shape[-2]), int(im.shape[-1])) for im in images]
        batch, sizes = self.normalize_and_pad([self.resize(im) for im in images])
        features = self.features(batch)
        if self.training:
            heads_targets = self.targets_for(targets, originals, sizes)
            proposals, losses = self.proposal_generator(features, sizes, [t["boxes"] for t in heads_targets])
            losses.update(self.roi_heads(features[:-1], [p for p, _ in proposals], sizes, heads_targets))
            return losses
        proposals, _ = self.proposal_generator(features, sizes)
        detections = self.roi_heads(features[:-1], [p for p, _ in proposals], sizes)
        return [self.postprocess(d, size, original)
                for d, size, original in zip(detections, sizes, originals, strict=True)]

    def inference(self, resized: list[torch.Tensor], detected: list[Detections] | None = None, *,
                  masks: bool = True) -> list[Detections]:
        """detectron2's ``GeneralizedRCNN.inference(..., do_postprocess=False)`` on images already resized.

        ``resized``: 0–255 CHW images in the network's frame (normalised and padded here as one batch), so
        the result is in that frame, not post-processed. With ``detected`` the given boxes and classes only
        get masks (``forward_with_given_boxes``); ``masks=False`` skips the mask head (the first pass of
        test-time augmentation, which detectron2 runs with ``mask_on`` switched off).
        """
        if self.training:
            raise RuntimeError("inference() runs in eval mode: call model.eval() first")
        batch, sizes = self.normalize_and_pad(resized)
        features = self.features(batch)
        if detected is None:
            proposals, _ = self.proposal_generator(features, sizes)
            detected = self.roi_heads.predict_boxes(features[:-1], [p for p, _ in proposals], sizes)
            if not masks:
                return detected
        return self.roi_heads.forward_with_given_boxes(features[:-1], detected)

    def postprocess(self, d: Detections, size: tuple[int, int], original: tuple[int, int]) -> dict:
        """``detector_postprocess``: boxes to the input image's pixels, clipped, empty ones dropped."""
        height, width = original
        boxes = d.boxes.clone()
        boxes[:, 0::2] *= width / size[1]
        boxes[:, 1::2] *= height / size[0]
        boxes = clip_boxes(boxes, height, width)
        keep = nonempty(boxes)
        out = {"boxes": boxes[keep], "labels": d.classes[keep] + 1, "scores": d.scores[keep]}
        if d.mask_probs is not None:
            out["masks"] = paste_masks(d.mask_probs[keep], out["boxes"], height, width)
        return out

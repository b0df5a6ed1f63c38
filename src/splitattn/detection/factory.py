"""``create_detector``: ResNeSt-FPN + torchvision's RPN and RoI heads (or our cascade) in one call.

The result is a torchvision ``GeneralizedRCNN``: a list of image tensors (and, in training, target
dicts with ``boxes`` XYXY, ``labels`` 1..C and, for the mask models, ``masks``) gives a dict of
losses in training and a list of ``{"boxes", "labels", "scores"[, "masks"]}`` in eval mode.
Defaults are detectron2's ResNeSt COCO configs (paper-facts §8.1).
"""

from __future__ import annotations

import inspect
import os
import re
from collections.abc import Sequence

from torch import nn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN
from torchvision.models.detection.mask_rcnn import MaskRCNNPredictor
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import MultiScaleRoIAlign

from .backbone import build_backbone
from .cascade import CASCADE_BOX_WEIGHTS, CASCADE_IOUS, CascadeRoIHeads, ClassAgnosticPredictor
from .heads import box_head, head_norm_layer, mask_head
from .rcnn import build_rcnn
from .rcnn.panoptic import PanopticFPN
from .rcnn.semantic import SemSegFPNHead

# arguments a caller may change on a pretrained detector (inference settings, not the architecture)
_OVERRIDABLE = ("score_thresh", "nms_thresh", "detections_per_img", "test_size", "max_size_test", "min_size",
                "max_size", "rpn_post_nms_test", "rpn_pre_nms_test", "norm", "head_norm", "freeze_at", "flavour",
                "roi_sampling_ratio", "panoptic_overlap_thresh", "stuff_area_thresh", "instances_score_thresh")

DETECTORS = ("faster_rcnn", "mask_rcnn", "cascade_rcnn", "cascade_mask_rcnn")
# Panoptic FPN (detectron2's PanopticFPN meta-architecture, detectron2 flavour only) and its instance branch
PANOPTIC = {"panoptic_fpn": "mask_rcnn", "cascade_panoptic_fpn": "cascade_mask_rcnn"}
# "detectron2": the paper's own computation (rcnn/, proven against detectron2 + the official plug-in);
# "torchvision": torchvision's RPN / RoIHeads / MultiScaleRoIAlign with our cascade
FLAVOURS = ("detectron2", "torchvision")
# detectron2's ResNeSt configs: RGB, PIXEL_MEAN [123.68, 116.779, 103.939] / STD [58.393, 57.12, 57.375]
IMAGE_MEAN = (123.68 / 255, 116.779 / 255, 103.939 / 255)
IMAGE_STD = (58.393 / 255, 57.12 / 255, 57.375 / 255)
# COCO "range" training: short side sampled in 640..800, max 1333; test at 800
COCO_TRAIN_SIZES = tuple(range(640, 801))


class MultiScaleTransform(GeneralizedRCNNTransform):
    """torchvision's transform with separate training sizes (one drawn per batch) and a test size."""

    def __init__(self, train_sizes: tuple[int, ...], test_size: int, max_size: int, mean, std):
        if not train_sizes or min(train_sizes) < 1 or test_size < 1:
            raise ValueError(f"image sizes must be positive, got train {train_sizes}, test {test_size}")
        super().__init__(test_size, max_size, mean, std)
        self.train_sizes, self.test_size = train_sizes, test_size
        self.train(True)

    def train(self, mode: bool = True):
        self.min_size = self.train_sizes if mode else (self.test_size,)
        return super().train(mode)


def create_detector(
    kind: str | None = None,
    backbone: str | None = None,
    num_classes: int | None = None,
    *,
    pretrained: str | None = None,
    pretrained_backbone: bool | str = False,
    norm: str = "syncbn",
    head_norm: str | None = None,
    fpn_norm: str | None = None,
    freeze_at: int = 2,
    box_head_type: str = "4conv1fc",
    fpn_channels: int = 256,
    box_conv_dim: int = 256,
    box_fc_dim: int = 1024,
    mask_conv_dim: int = 256,
    mask_num_convs: int = 4,
    mask_head_norm: str | None = None,
    anchor_sizes: Sequence[int] = (32, 64, 128, 256, 512),
    aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
    min_size: int | Sequence[int] = COCO_TRAIN_SIZES,
    test_size: int = 800,
    max_size: int = 1333,
    max_size_test: int | None = None,
    rpn_post_nms_train: int | None = None,
    rpn_post_nms_test: int = 1000,
    rpn_pre_nms_train: int = 2000,
    rpn_pre_nms_test: int = 1000,
    rpn_batch_size_per_image: int = 256,
    box_batch_size_per_image: int = 512,
    score_thresh: float = 0.05,
    nms_thresh: float = 0.5,
    detections_per_img: int = 100,
    roi_sampling_ratio: int = 0,
    sem_seg_classes: int = 54,
    sem_seg_dim: int = 128,
    sem_seg_norm: str = "gn",
    sem_seg_loss_weight: float = 0.5,
    panoptic_overlap_thresh: float = 0.5,
    stuff_area_thresh: int = 4096,
    instances_score_thresh: float = 0.5,
    flavour: str = "detectron2",
    cascade_style: str = "detectron2",
    progress: bool = True,
    **backbone_overrides,
) -> GeneralizedRCNN:
    """Build ``kind`` in :data:`DETECTORS` or :data:`PANOPTIC` on a zoo ``backbone`` (default ``resnest50``).

    Args:
        pretrained: a detection zoo name (``splitattn list --task detect``): builds that checkpoint's
            architecture and settings (detectron2 flavour, 80 COCO classes) and loads the released weights;
            ``kind`` / ``backbone`` / ``num_classes`` may be left out; inference arguments (score / NMS
            thresholds, sizes, norms) set to other than their defaults override the row's. Or a path / URL
            of a whole detectron2 detector file (or ``splitattn convert --detector`` output) for ``kind``.
        num_classes: object classes + 1 for background (81 for COCO, the default), as torchvision counts.
        pretrained_backbone: False, True (the zoo's ImageNet weights) or a path to an official-layout
            state_dict (``splitattn convert`` turns detectron2 / mmdet backbones into one).
        norm: backbone norm, ``'syncbn'`` (paper; synchronised under torchrun, CPU or GPU), ``'bn'``,
            ``'frozenbn'`` (torchvision's default for fine-tuning) or ``'gn'``.
        head_norm: FPN / box head / mask head norm; None = follow ``norm`` (none for frozenbn).
        fpn_norm: the FPN's own norm when it differs (mmdet's ResNeSt configs: ``'none'``); None = ``head_norm``.
        freeze_at: detectron2's FREEZE_AT (2 = stem and res2 frozen).
        box_head_type: ``'4conv1fc'`` (paper) or ``'2fc'``.
        mask_num_convs: 3×3 convs in the mask head (4 in the paper's configs).
        mask_head_norm: the mask head's norm when it differs from ``head_norm`` (the ResNeSt panoptic config:
            ``'none'``; detectron2 flavour only).
        min_size: training short side(s), sampled per iteration; ``test_size`` at eval.
        max_size / max_size_test: longest side in training / at eval (``max_size_test`` None: ``max_size``).
        rpn_post_nms_train: proposals kept per image in training (None: 1000, 2000 for the cascades).
        roi_sampling_ratio: RoIAlign samples per bin side; 0 = adaptive (detectron2), 2 is cheaper on CPU.
        sem_seg_classes / sem_seg_dim / sem_seg_norm / sem_seg_loss_weight: Panoptic FPN's semantic head
            (detectron2's SEM_SEG_HEAD: 54 = COCO's 53 stuff classes + one for all things, 128 channels, GroupNorm
            as detectron2's default and the base ResNeSt panoptic config, the ResNeSt configs' loss weight 0.5).
        panoptic_overlap_thresh / stuff_area_thresh / instances_score_thresh: detectron2's PANOPTIC_FPN.COMBINE
            settings (0.5, 4096 px, 0.5).
        flavour: ``'detectron2'`` computes what detectron2 + the official ResNeSt plug-in compute (ROIAlignV2,
            unrounded anchors, background-last classes, detectron2's losses and post-processing; the layout of
            converted official checkpoints) or ``'torchvision'`` (torchvision's RPN and RoI heads).
        cascade_style: ``'detectron2'`` or ``'mmdet'`` (the detectron2 flavour's cascades with mmdetection's
            test-time scoring, per-stage mask heads and stage weights: the layout of mmdet's checkpoints).
        **backbone_overrides: :func:`splitattn.create_model` arguments (e.g. ``base_planes``).
    """
    if pretrained is not None:
        return _create_pretrained(pretrained, kind, backbone, num_classes, progress, **{
            k: v for k, v in locals().items() if k in _OVERRIDABLE and v != _DEFAULTS[k]})
    backbone, num_classes = backbone or "resnest50", 81 if num_classes is None else num_classes
    if kind not in DETECTORS and kind not in PANOPTIC:
        raise ValueError(f"unknown detector {kind!r}: use one of {', '.join(DETECTORS + tuple(PANOPTIC))}")
    if kind in PANOPTIC and flavour != "detectron2":
        raise ValueError(f"{kind} exists in the detectron2 flavour only: leave flavour at 'detectron2'")
    if num_classes < 2:
        raise ValueError(f"num_classes counts the background too, so it must be >= 2 (COCO: 81), got {num_classes}")
    if flavour not in FLAVOURS:
        raise ValueError(f"unknown flavour {flavour!r}: use one of {', '.join(FLAVOURS)}")
    instance_kind = PANOPTIC.get(kind, kind)
    cascade, masks = instance_kind.startswith("cascade"), instance_kind.endswith("mask_rcnn")
    head_norm = head_norm or ("none" if norm == "frozenbn" else norm)
    fpn = build_backbone(backbone, pretrained_backbone, norm, freeze_at, fpn_channels,
                         fpn_norm=head_norm_layer(fpn_norm or head_norm), progress=progress, **backbone_overrides)
    train_sizes = (min_size,) if isinstance(min_size, int) else tuple(min_size)
    if flavour == "detectron2":
        if len(anchor_sizes) != len(fpn.strides):
            raise ValueError(f"anchor_sizes needs one size per FPN level ({len(fpn.strides)}), got {len(anchor_sizes)}")
        detector = build_rcnn(
            instance_kind, fpn, num_classes, head_norm=head_norm, box_head_type=box_head_type,
            box_conv_dim=box_conv_dim, box_fc_dim=box_fc_dim, mask_conv_dim=mask_conv_dim,
            mask_num_convs=mask_num_convs, mask_norm=mask_head_norm, anchor_sizes=anchor_sizes,
            aspect_ratios=aspect_ratios, train_sizes=train_sizes, test_size=test_size,
            max_size=max_size, max_size_test=max_size_test, rpn_post_nms_train=rpn_post_nms_train,
            rpn_post_nms_test=rpn_post_nms_test,
            rpn_pre_nms_train=rpn_pre_nms_train, rpn_pre_nms_test=rpn_pre_nms_test,
            rpn_batch_size_per_image=rpn_batch_size_per_image, box_batch_size_per_image=box_batch_size_per_image,
            score_thresh=score_thresh, nms_thresh=nms_thresh, detections_per_img=detections_per_img,
            roi_sampling_ratio=roi_sampling_ratio, cascade_style=cascade_style)
        if kind in PANOPTIC:
            head = SemSegFPNHead(fpn.out_channels, fpn.strides[:-1], sem_seg_classes, sem_seg_dim, norm=sem_seg_norm,
                                 loss_weight=sem_seg_loss_weight)
            detector = PanopticFPN.from_rcnn(detector, head, overlap_thresh=panoptic_overlap_thresh,
                                             stuff_area_thresh=stuff_area_thresh,
                                             instances_score_thresh=instances_score_thresh)
        detector.kind, detector.num_classes, detector.flavour = kind, num_classes, flavour
        return detector

    anchors = AnchorGenerator(tuple((s,) for s in anchor_sizes), (tuple(aspect_ratios),) * len(anchor_sizes))
    if len(anchor_sizes) != len(fpn.strides):
        raise ValueError(f"anchor_sizes needs one size per FPN level ({len(fpn.strides)}), got {len(anchor_sizes)}")
    post_train = rpn_post_nms_train or (2000 if cascade else 1000)
    rpn = RegionProposalNetwork(
        anchors, RPNHead(fpn_channels, anchors.num_anchors_per_location()[0]),
        fg_iou_thresh=0.7, bg_iou_thresh=0.3, batch_size_per_image=rpn_batch_size_per_image, positive_fraction=0.5,
        pre_nms_top_n=dict(training=rpn_pre_nms_train, testing=rpn_pre_nms_test),
        post_nms_top_n=dict(training=post_train, testing=rpn_post_nms_test), nms_thresh=0.7)

    levels = ["0", "1", "2", "3"]
    box_pool = MultiScaleRoIAlign(levels, output_size=7, sampling_ratio=roi_sampling_ratio)
    mask_parts = {}
    if masks:
        mask_parts = dict(mask_roi_pool=MultiScaleRoIAlign(levels, output_size=14, sampling_ratio=roi_sampling_ratio),
                          mask_head=mask_head(fpn_channels, mask_conv_dim, mask_num_convs, norm=head_norm),
                          mask_predictor=MaskRCNNPredictor(mask_conv_dim, mask_conv_dim, num_classes))
    inference = dict(score_thresh=score_thresh, nms_thresh=nms_thresh, detections_per_img=detections_per_img)
    if cascade:
        heads = [box_head(box_head_type, fpn_channels, 7, box_conv_dim, box_fc_dim, head_norm) for _ in CASCADE_IOUS]
        roi_heads = CascadeRoIHeads(box_pool, [h for h, _ in heads],
                                    [ClassAgnosticPredictor(width, num_classes) for _, width in heads],
                                    CASCADE_IOUS, CASCADE_BOX_WEIGHTS, batch_size_per_image=box_batch_size_per_image,
                                    positive_fraction=0.25, **inference, **mask_parts)
    else:
        head, width = box_head(box_head_type, fpn_channels, 7, box_conv_dim, box_fc_dim, head_norm)
        roi_heads = RoIHeads(box_pool, head, FastRCNNPredictor(width, num_classes), 0.5, 0.5,
                             box_batch_size_per_image, 0.25, None, **inference, **mask_parts)

    if cascade_style != "detectron2" or mask_head_norm is not None:
        raise ValueError("cascade_style and mask_head_norm apply to flavour='detectron2' only")
    if max_size_test not in (None, max_size):
        raise ValueError("the torchvision flavour has one max_size for training and eval: leave max_size_test unset")
    transform = MultiScaleTransform(train_sizes, test_size, max_size, list(IMAGE_MEAN), list(IMAGE_STD))
    detector = GeneralizedRCNN(fpn, rpn, roi_heads, transform)
    detector.kind, detector.num_classes, detector.flavour = kind, num_classes, flavour
    return detector


def _create_pretrained(name: str, kind, backbone, num_classes, progress: bool, **overrides) -> nn.Module:
    """A zoo row by name, or a detectron2 / ``splitattn convert --detector`` file (path or URL) for ``kind``."""
    from .zoo import DETECTION_ZOO, detector_kwargs, get_detection_entry, load_detector_file, load_pretrained

    if name not in DETECTION_ZOO and (os.path.exists(name) or re.match(r"^(https?|file)://", name)):
        if kind is None:
            raise ValueError(f"pretrained={name!r} is a file: name the architecture too, e.g. "
                             "create_detector('mask_rcnn', 'resnest50', pretrained=PATH)")
        if overrides.setdefault("flavour", "detectron2") != "detectron2":
            raise ValueError("whole-detector files load into flavour='detectron2' only (for an mmdet file add "
                             "fpn_norm='none' and, for a cascade, cascade_style='mmdet')")
        model = create_detector(kind, backbone, num_classes, progress=progress, **overrides)
        model.pretrained_notes = load_detector_file(model, name, progress)
        model.pretrained = name
        return model
    row = get_detection_entry(name)
    kwargs = detector_kwargs(row)
    for key, value in (("kind", kind), ("backbone", backbone), ("num_classes", num_classes)):
        if value is not None and value != kwargs[key]:
            raise ValueError(f"{name} is a {kwargs['kind']} on {kwargs['backbone']} with {kwargs['num_classes']} "
                             f"classes (background included): {key}={value!r} does not fit it; leave it out")
    if overrides.get("flavour", "detectron2") != "detectron2":
        raise ValueError(f"{name} loads into flavour='detectron2' only")
    kwargs.update(overrides)
    model = create_detector(**kwargs, progress=progress)
    model.pretrained_notes = load_pretrained(model, row, progress)
    model.pretrained = name
    return model


def detector_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


_DEFAULTS = {name: p.default for name, p in inspect.signature(create_detector).parameters.items()}

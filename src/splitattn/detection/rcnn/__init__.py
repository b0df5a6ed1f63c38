"""R-CNN detectors that compute what detectron2 + the official ResNeSt plug-in compute (the paper's own)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from .model import DetectronRCNN, paste_masks, resized_shape
from .roi_heads import CascadeRoIHeads, StandardRoIHeads
from .rpn import RPN

__all__ = ["DetectronRCNN", "build_rcnn", "paste_masks", "resized_shape"]

BOX_HEAD_LAYERS = {"4conv1fc": (4, 1), "2fc": (0, 2)}
CASCADE_STYLES = ("detectron2", "mmdet")
# mmdet's cascade (configs/_base_/models/cascade-rcnn_r50_fpn.py): target_stds per stage → our coder weights
# (1 / std), stage loss weights 1 / 0.5 / 0.25, mean-logit scoring and a mask head per stage
MMDET_CASCADE = dict(stage_weights=((10.0, 10.0, 5.0, 5.0), (20.0, 20.0, 10.0, 10.0),
                                    (1 / 0.033, 1 / 0.033, 1 / 0.067, 1 / 0.067)),
                     stage_loss_weights=(1.0, 0.5, 0.25), score_mode="mean_logits", mask_per_stage=True)


def build_rcnn(kind: str, fpn: nn.Module, num_classes: int, *, head_norm: str = "none",
               box_head_type: str = "4conv1fc", box_conv_dim: int = 256, box_fc_dim: int = 1024,
               mask_conv_dim: int = 256, mask_num_convs: int = 4, mask_norm: str | None = None,
               anchor_sizes: Sequence[int] = (32, 64, 128, 256, 512), aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
               train_sizes: Sequence[int] = tuple(range(640, 801)), test_size: int = 800, max_size: int = 1333,
               max_size_test: int | None = None, rpn_post_nms_train: int | None = None, rpn_post_nms_test: int = 1000,
               rpn_pre_nms_train: int = 2000, rpn_pre_nms_test: int = 1000, rpn_batch_size_per_image: int = 256,
               box_batch_size_per_image: int = 512, score_thresh: float = 0.05, nms_thresh: float = 0.5,
               detections_per_img: int = 100, roi_sampling_ratio: int = 0,
               cascade_style: str = "detectron2") -> DetectronRCNN:
    """``kind`` on ``fpn`` (a :class:`~splitattn.detection.backbone.ResNeStFPN`); ``num_classes`` counts background.

    Defaults are the official ResNeSt detectron2 configs (``resnest/d2/configs`` of zhanghang1989/ResNeSt);
    ``cascade_style='mmdet'`` gives the cascades mmdetection's test-time conventions (:data:`MMDET_CASCADE`).
    """
    if cascade_style not in CASCADE_STYLES:
        raise ValueError(f"unknown cascade_style {cascade_style!r}: use one of {', '.join(CASCADE_STYLES)}")
    if box_head_type not in BOX_HEAD_LAYERS:
        raise ValueError(f"unknown box head {box_head_type!r}: use one of {', '.join(BOX_HEAD_LAYERS)}")
    cascade, masks = kind.startswith("cascade"), kind.endswith("mask_rcnn")
    strides = tuple(fpn.strides)
    rpn = RPN(fpn.out_channels, tuple(anchor_sizes), tuple(aspect_ratios), strides,
              pre_nms_topk=(rpn_pre_nms_train, rpn_pre_nms_test),
              post_nms_topk=(rpn_post_nms_train or (2000 if cascade else 1000), rpn_post_nms_test),
              batch_size_per_image=rpn_batch_size_per_image)
    num_conv, num_fc = BOX_HEAD_LAYERS[box_head_type]
    extra = MMDET_CASCADE if cascade and cascade_style == "mmdet" else {}
    heads = (CascadeRoIHeads if cascade else StandardRoIHeads)(
        num_classes - 1, fpn.out_channels, strides[:-1], num_conv=num_conv, conv_dim=box_conv_dim, num_fc=num_fc,
        fc_dim=box_fc_dim, norm=head_norm, mask=masks, mask_num_conv=mask_num_convs, mask_conv_dim=mask_conv_dim,
        mask_norm=mask_norm,
        batch_size_per_image=box_batch_size_per_image, score_thresh=score_thresh, nms_thresh=nms_thresh,
        detections_per_image=detections_per_img, sampling_ratio=roi_sampling_ratio, **extra)
    return DetectronRCNN(fpn, rpn, heads, train_sizes=tuple(train_sizes), max_size_train=max_size,
                         test_size=test_size, max_size_test=max_size_test or max_size)

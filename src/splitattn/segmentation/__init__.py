"""Semantic segmentation: DeepLabV3 and FCN on a dilated ResNeSt (official dilation semantics)."""

from .losses import lovasz_softmax, segmentation_loss
from .metrics import ConfusionMatrix, predict_logits
from .models import SEGMENTERS, Segmenter, create_segmenter
from .refine import BilateralRefine, bilateral_refine

__all__ = ["SEGMENTERS", "BilateralRefine", "ConfusionMatrix", "Segmenter", "bilateral_refine", "create_segmenter",
           "lovasz_softmax", "predict_logits", "segmentation_loss"]

"""Semantic segmentation: DeepLabV3, DeepLabV3+ and FCN on a dilated ResNeSt (official dilation semantics)."""

from .losses import segmentation_loss
from .metrics import ConfusionMatrix, predict_logits
from .models import SEGMENTERS, Segmenter, create_segmenter

__all__ = ["SEGMENTERS", "ConfusionMatrix", "Segmenter", "create_segmenter", "predict_logits", "segmentation_loss"]

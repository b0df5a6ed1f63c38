"""Semantic segmentation: DeepLabV3 and FCN on a dilated ResNeSt (official dilation semantics)."""

from .metrics import ConfusionMatrix, predict_logits
from .models import SEGMENTERS, Segmenter, create_segmenter, segmentation_loss

__all__ = ["SEGMENTERS", "ConfusionMatrix", "Segmenter", "create_segmenter", "predict_logits", "segmentation_loss"]

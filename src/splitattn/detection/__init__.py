"""Detection, instance and panoptic segmentation: ResNeSt-FPN with Faster, Mask, Cascade and Cascade Mask R-CNN and
Panoptic FPN (DCNv2 in the backbone optional), and detectron2's multi-scale + flip test."""

from .backbone import ResNeStFPN, build_backbone, freeze_stages
from .cascade import CascadeRoIHeads
from .factory import DETECTORS, FLAVOURS, PANOPTIC, create_detector
from .panoptic_data import CocoPanoptic
from .panoptic_eval import evaluate_panoptic
from .rcnn import DetectronRCNN
from .rcnn.panoptic import PanopticFPN
from .rcnn.tta import DetectionTTA

__all__ = ["DETECTORS", "FLAVOURS", "PANOPTIC", "CascadeRoIHeads", "CocoPanoptic", "DetectionTTA", "DetectronRCNN",
           "PanopticFPN", "ResNeStFPN", "build_backbone", "create_detector", "evaluate_panoptic", "freeze_stages"]

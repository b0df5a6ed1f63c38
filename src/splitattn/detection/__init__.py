"""Detection and instance segmentation: ResNeSt-FPN with Faster, Mask, Cascade and Cascade Mask R-CNN."""

from .backbone import ResNeStFPN, build_backbone, freeze_stages
from .cascade import CascadeRoIHeads
from .factory import DETECTORS, FLAVOURS, create_detector
from .rcnn import DetectronRCNN

__all__ = ["DETECTORS", "FLAVOURS", "CascadeRoIHeads", "DetectronRCNN", "ResNeStFPN", "build_backbone",
           "create_detector", "freeze_stages"]

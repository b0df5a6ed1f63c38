"""Detection and instance segmentation: ResNeSt-FPN with Faster, Mask, Cascade and Cascade Mask R-CNN."""

from .backbone import ResNeStFPN, build_backbone, freeze_stages
from .cascade import CascadeRoIHeads
from .factory import DETECTORS, create_detector

__all__ = ["DETECTORS", "CascadeRoIHeads", "ResNeStFPN", "build_backbone", "create_detector", "freeze_stages"]

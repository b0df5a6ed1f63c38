"""Datasets and transforms."""

from .transforms import CenterCropFraction, ToMode, create_transform

__all__ = ["CenterCropFraction", "ToMode", "create_transform"]

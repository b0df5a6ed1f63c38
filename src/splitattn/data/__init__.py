"""Image input shared by every task: the official eval transform, safe image reading, sample photos."""

from .images import DatasetError, ImageError, open_image, set_max_pixels, to_rgb
from .transforms import CenterCropFraction, ToMode, create_transform

__all__ = ["CenterCropFraction", "DatasetError", "ImageError", "ToMode", "create_transform", "open_image",
           "set_max_pixels", "to_rgb"]

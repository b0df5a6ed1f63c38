"""The official evaluation preprocessing.

``scripts/torch/verify.py`` of the official repo (``ECenterCrop``): take the centred square of side
``short_side · s/(s+32)`` and resize it to s×s, bicubic. That is crop fraction 0.875 / 0.889 /
0.909 / 0.929 at 224 / 256 / 320 / 416, and it is what gives the published 81.03 for ResNeSt-50;
timm's bilinear 0.875 pipeline gives 80.96 on the same weights (ResNeSt #121).
"""

from __future__ import annotations

from PIL import Image
from torchvision import transforms
from torchvision.transforms import InterpolationMode

from ..models.zoo import EvalConfig, ModelEntry, get_entry


class CenterCropFraction:
    """Crop the centred square of side ``short · size/(size+32)`` from a PIL image, resize it to ``size``²."""

    def __init__(self, size: int, interpolation: str = "bicubic"):
        self.size = size
        self.interpolation = interpolation
        self.resize = transforms.Resize((size, size), interpolation=InterpolationMode(interpolation))

    def __call__(self, img: Image.Image) -> Image.Image:
        width, height = img.size
        side = self.size / (self.size + 32) * min(width, height)
        top = int(round((height - side) / 2.0))
        left = int(round((width - side) / 2.0))
        # PIL rounds the float box corners, exactly as the official transform relies on.
        return self.resize(img.crop((left, top, left + side, top + side)))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size}, crop_pct={self.size / (self.size + 32):.3f}, " \
               f"interpolation={self.interpolation})"


class ToMode:
    """Convert a PIL image to ``mode`` (RGB photos may arrive as L, P, RGBA or CMYK)."""

    def __init__(self, mode: str = "RGB"):
        self.mode = mode

    def __call__(self, img: Image.Image) -> Image.Image:
        return img if img.mode == self.mode else img.convert(self.mode)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.mode!r})"


def create_transform(model: str | ModelEntry | EvalConfig, crop: int | None = None) -> transforms.Compose:
    """The official eval transform for a zoo model (name or entry): PIL image → normalised tensor.

    ``crop`` overrides the entry's eval crop (the crop fraction follows: ``crop/(crop+32)``).
    """
    if isinstance(model, str):
        model = get_entry(model)
    cfg = model.eval if isinstance(model, ModelEntry) else model
    return transforms.Compose([
        ToMode("RGB"),
        CenterCropFraction(crop or cfg.crop, cfg.interpolation),
        transforms.ToTensor(),
        transforms.Normalize(cfg.mean, cfg.std),
    ])

"""Sample photos shipped with splitattn, for the demo and export checks.

Four small real photos (short side 256 px, RGB JPEG), all public domain or CC0, taken from the sample
data bundled in the scikit-image 0.26.0 wheel. Source file, author, licence (quoted) and the exact
transformation of each are in ``photos/README.md`` next to this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PHOTOS_DIR = Path(__file__).parent / "photos"

# file name -> (expected ImageNet-1k class index, description); see photos/README.md
_PHOTOS: dict[str, tuple[int, str]] = {
    "camera.jpg": (872, "man filming with a camera on a tripod, grayscale (approximate: 872 'tripod')"),
    "chelsea.jpg": (281, "close-up of a tabby cat (281 'tabby'; 282 'tiger cat' / 285 'Egyptian cat' are close)"),
    "coffee.jpg": (967, "espresso in a cup on a saucer (967 'espresso'; 968 'cup' is close)"),
    "rocket.jpg": (657, "Falcon 9 rocket on the launch pad at dusk (approximate: 657 'missile'; 744 'projectile')"),
}


@dataclass(frozen=True)
class SamplePhoto:
    path: Path
    imagenet_class: int  # expected ImageNet-1k class index (torchvision order)
    description: str


def sample_photos() -> list[SamplePhoto]:
    """The shipped photos, sorted by file name."""
    return [SamplePhoto(PHOTOS_DIR / name, cls, desc) for name, (cls, desc) in sorted(_PHOTOS.items())]

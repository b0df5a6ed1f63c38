"""Reading image files for every task: any PIL mode to RGB, and a pixel limit that is a one-line error.

PIL's own conversions lose 16-bit images: ``convert("L")`` / ``convert("RGB")`` of an ``I;16`` PNG clips
every value above 255, which turns a normal 16-bit photo white except its darkest pixels. Here 16-bit
values are scaled to 8 bits (÷ 257) instead. PIL's decompression-bomb guard raises an error with a
traceback-sized message; here the limit is checked from the header, before any pixel is decoded, and the
error says how to raise it (``--max-pixels`` on the command line, ``SPLITATTN_MAX_PIXELS``, or
:func:`set_max_pixels`; 0 = no limit).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

DEFAULT_MAX_PIXELS = 89_478_485  # PIL's default warning limit (Image.MAX_IMAGE_PIXELS): a 9459 × 9459 image
_max_pixels: int | None = None  # set_max_pixels(); None: SPLITATTN_MAX_PIXELS or the default


class DatasetError(ValueError):
    """A dataset is missing, empty or malformed; the message says how to fix it."""


class ImageError(DatasetError):
    """An image file cannot be used; the message names the file, the cause and the fix."""


def set_max_pixels(limit: int | None) -> None:
    """The largest image (width × height) :func:`open_image` decodes in this process; 0 = no limit, None = the
    ``SPLITATTN_MAX_PIXELS`` environment variable or the default (PIL's 89,478,485)."""
    global _max_pixels
    if limit is not None and limit < 0:
        raise ValueError(f"max pixels must be >= 0 (0 = no limit), got {limit}")
    _max_pixels = limit


def max_pixels() -> int:
    if _max_pixels is not None:
        return _max_pixels
    text = os.environ.get("SPLITATTN_MAX_PIXELS", "")
    try:
        return int(text) if text else DEFAULT_MAX_PIXELS
    except ValueError:
        raise ImageError(f"SPLITATTN_MAX_PIXELS={text!r} is not a whole number of pixels (0 = no limit)") from None


def _to_uint8(array: np.ndarray, sixteen_bit: bool) -> np.ndarray:
    """8-bit values of a 16-bit (``sixteen_bit``), 32-bit integer or float single-channel image."""
    floating = array.dtype.kind == "f"
    values = array.astype(np.float64)
    low, high = values.min(initial=0), values.max(initial=0)
    if sixteen_bit or (not floating and low >= 0 and 255 < high <= 65535):
        values = values / 257.0  # 65535 → 255
    elif floating and low >= 0 and high <= 1:
        values = values * 255.0  # float images in [0, 1]
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def to_rgb(image: Image.Image) -> Image.Image:
    """``image`` as 8-bit RGB: 16-bit and 32-bit grayscale scaled (not clipped), palette transparency and
    alpha dropped, CMYK / YCbCr / L / 1 converted by PIL."""
    if image.mode == "RGB":
        return image
    if image.mode.startswith("I;16") or image.mode in ("I", "F"):
        gray = _to_uint8(np.asarray(image), sixteen_bit=image.mode.startswith("I;16"))
        return Image.fromarray(gray, "L").convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    return image.convert("RGB")


def open_image(path: str | os.PathLike, limit: int | None = None) -> Image.Image:
    """An image file, decoded and converted by :func:`to_rgb`; files over the pixel limit, missing or
    unreadable files are an :class:`ImageError` naming the file."""
    path = Path(path)
    limit = max_pixels() if limit is None else limit
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # this function checks the limit itself, with a message that says how to raise it
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
                if limit and width * height > limit:
                    raise ImageError(
                        f"{path} is {width}×{height} = {width * height:,} pixels, above the limit of {limit:,} "
                        "(a guard against decompression bombs); if you trust the file, raise the limit with "
                        f"--max-pixels {width * height} or SPLITATTN_MAX_PIXELS={width * height} (0 = no limit)")
                image.load()
                return to_rgb(image)
    except FileNotFoundError:
        raise ImageError(f"image file {path} does not exist") from None
    except IsADirectoryError:
        raise ImageError(f"{path} is a directory, not an image file") from None
    except (OSError, SyntaxError, ValueError) as err:
        if isinstance(err, ImageError):
            raise
        raise ImageError(f"{path} is not a readable image ({str(err).strip() or type(err).__name__})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = previous


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) from the file's header; nothing is decoded, so no pixel limit applies."""
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        with Image.open(path) as image:
            return image.size
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageError(f"{path} is not a readable image ({str(err).strip() or type(err).__name__})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = previous

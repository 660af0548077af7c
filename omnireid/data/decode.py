"""Decode any image a user may have to the RGB pixels it shows.

``PIL.Image.convert("RGB")`` alone is wrong for several common files: a 16-bit grayscale PNG is
clipped to white (its 0..65535 values saturate the 8-bit path), a transparent pixel keeps whatever
colour it stores under alpha 0, and a photo with an EXIF orientation tag comes out lying on its side.
:func:`to_rgb` fixes each case:

- EXIF orientation is applied (the pixels are turned the way cameras and viewers show them);
- 16-bit samples map to their most significant byte (``v >> 8``), exactly what Pillow's decoder
  does for 16-bit colour PNGs, so 16-bit grayscale and 16-bit colour files agree;
- transparency (RGBA, LA, palette with a transparent index) is composited over white, as image
  viewers and "flatten" commands show it;
- CMYK, palette, 1-bit, YCbCr and LAB go through Pillow's colour conversion.
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageOps

BACKGROUND = (255, 255, 255)  # what transparent pixels become
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


def _sixteen_bit_to_l(image: Image.Image) -> Image.Image:
    """A 16-bit (or 32-bit integer holding 16-bit data) grayscale image as 8-bit: the high byte."""
    values = np.asarray(image).astype(np.int64)
    return Image.fromarray((np.clip(values, 0, 65535) >> 8).astype(np.uint8), mode="L")


def _float_to_l(image: Image.Image) -> Image.Image:
    """A floating-point grayscale image (0..255 scale, as Pillow's own conversion assumes) as 8-bit."""
    values = np.nan_to_num(np.asarray(image, dtype=np.float64), nan=0.0)
    return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), mode="L")


def _flatten_alpha(image: Image.Image) -> Image.Image:
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, BACKGROUND + (255,))
    return Image.alpha_composite(background, rgba).convert("RGB")


def to_rgb(image: Image.Image) -> Image.Image:
    """The 8-bit RGB image ``image`` shows (see the module docstring); ``image`` is not modified."""
    image.load()
    image = ImageOps.exif_transpose(image) or image
    mode = image.mode
    if mode in _SIXTEEN_BIT_MODES:
        return _sixteen_bit_to_l(image).convert("RGB")
    if mode == "F":
        return _float_to_l(image).convert("RGB")
    if mode in _ALPHA_MODES or "transparency" in image.info:  # RGBA, LA, or P/L/RGB with a transparent colour
        return _flatten_alpha(image)
    return image.convert("RGB")

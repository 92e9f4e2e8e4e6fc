"""Read one 2-D image or mask into plain arrays, and resize them.

Images come back as uint8 RGB ``(row, col, 3)`` whatever the file holds: greyscale and
palette images are expanded to three equal channels, an alpha channel is dropped, 16-bit and
float greyscale are scaled to 0-255. Masks come back as bool ``(row, col)``; a mask whose
pixels take more than two values (a JPEG-compressed or anti-aliased mask) is thresholded at
half its maximum and reported as not binary, so the caller can name the file.

Pillow reads the files (BMP, PNG, JPEG, TIFF; a declared dependency): unlike SimpleITK it
knows palette and 1-bit images and alpha channels.
Resizing runs in torch (bilinear with antialiasing for images; the same for masks, then
thresholded at 0.5, so a resized mask stays binary and keeps its area).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from src_train.errors import ImageSetError

if TYPE_CHECKING:
    from PIL.Image import Image

#: File name endings read as 2-D images (lower case; matched case-insensitively).
IMAGE_SUFFIXES = (".bmp", ".png", ".jpg", ".jpeg", ".tif", ".tiff")

#: Largest 8-bit value.
UINT8_MAX = 255

#: A resampled mask pixel is lesion above this fraction of the lesion value.
MASK_RESAMPLE_THRESHOLD = 0.5

#: A mask with more than two values is lesion above this fraction of its maximum.
NON_BINARY_MASK_THRESHOLD = 0.5


@dataclass(frozen=True)
class ReadImage:
    """An image as read: ``rgb`` uint8 ``(row, col, 3)``; ``converted`` names what was
    changed to get there (``"greyscale"``, ``"palette"``, ``"alpha dropped"``, ``"16-bit"``...),
    empty when the file was 8-bit RGB."""

    rgb: np.ndarray
    converted: str = ""


@dataclass(frozen=True)
class ReadMask:
    """A mask as read: ``mask`` bool ``(row, col)``; ``binary`` False when the file had more
    than two values and was thresholded at half its maximum."""

    mask: np.ndarray
    binary: bool = True


def _open(path: Path) -> Image:
    """The Pillow image of ``path`` (single frame), or :class:`ImageSetError` naming it."""
    from PIL import Image as PILImage
    from PIL import UnidentifiedImageError

    try:
        image = PILImage.open(path)
        image.load()
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ImageSetError(
            f"Cannot read {path} as an image ({type(exc).__name__}: {exc}). Replace or remove "
            "the file."
        ) from exc
    frames = getattr(image, "n_frames", 1)
    if frames > 1:
        raise ImageSetError(
            f"{path} holds {frames} frames (a stack or volume), not one 2-D image. Image sets "
            "take one 2-D picture per file; CT volumes go to 'lunaseg train' in LUNA16 layout."
        )
    return image


def _scaled_to_uint8(values: np.ndarray) -> np.ndarray:
    """Greyscale of more than 8 bits -> uint8: unsigned integers by their type's full range,
    anything else (signed, float) by its own minimum and maximum."""
    if values.dtype.kind == "u":
        full_scale = np.iinfo(values.dtype).max
        return np.rint(values.astype(np.float64) * (UINT8_MAX / full_scale)).astype(np.uint8)
    low, high = float(values.min()), float(values.max())
    span = high - low if high > low else 1.0
    return np.rint((values.astype(np.float64) - low) * (UINT8_MAX / span)).astype(np.uint8)


def read_rgb(path: str | os.PathLike[str]) -> ReadImage:
    """Read an image file as uint8 RGB ``(row, col, 3)`` (see the module docstring)."""
    src = Path(path)
    image = _open(src)
    mode = image.mode
    if mode == "RGB":
        return ReadImage(np.asarray(image, dtype=np.uint8).copy())
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        grey = _scaled_to_uint8(np.asarray(image))
        return ReadImage(np.repeat(grey[..., None], 3, axis=-1), "greyscale of more than 8 bits")
    notes = {
        "L": "greyscale",
        "1": "1-bit",
        "P": "palette",
        "RGBA": "alpha dropped",
        "LA": "greyscale, alpha dropped",
        "PA": "palette, alpha dropped",
        "CMYK": "CMYK",
    }
    rgb = np.asarray(image.convert("RGB"), dtype=np.uint8).copy()
    return ReadImage(rgb, notes.get(mode, mode))


def read_mask(path: str | os.PathLike[str]) -> ReadMask:
    """Read a mask file as bool ``(row, col)``: lesion where the value is above zero when the
    file has at most two values (0 and one other), else above half the maximum (then
    ``binary`` is False). Colour masks count a pixel by its brightest colour channel."""
    src = Path(path)
    image = _open(src)
    if image.mode in ("RGBA", "LA", "PA"):
        image = image.convert("RGB" if image.mode != "LA" else "L")
    elif image.mode in ("P", "CMYK"):
        image = image.convert("RGB")
    values = np.asarray(image)
    if values.ndim == 3:
        values = values.max(axis=2)
    if values.dtype == np.bool_:
        return ReadMask(values.copy())
    top = values.max()
    distinct = np.unique(values)
    if (distinct.size <= 2 and distinct[0] == 0) or distinct.size == 1:
        return ReadMask(values > 0)
    return ReadMask(values > NON_BINARY_MASK_THRESHOLD * top, binary=False)


def _check_size(size: tuple[int, int]) -> tuple[int, int]:
    rows, cols = (int(v) for v in size)
    if rows < 1 or cols < 1:
        raise ImageSetError(f"Image size must be positive; got {size}.")
    return rows, cols


def resize_rgb(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 RGB ``(row, col, 3)`` resized to ``size`` = ``(rows, cols)`` (bilinear with
    antialiasing; the aspect ratio follows ``size``). Same size: an unchanged copy."""
    rows, cols = _check_size(size)
    if rgb.shape[:2] == (rows, cols):
        return rgb.copy()
    chw = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float()
    out = F.interpolate(chw, size=(rows, cols), mode="bilinear", antialias=True)
    return out[0].permute(1, 2, 0).round().clamp(0, UINT8_MAX).to(torch.uint8).numpy()


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """bool ``(row, col)`` resized to ``size``: the lesion fraction of each output pixel is
    interpolated (bilinear, antialiased) and thresholded at 0.5, so the result is binary."""
    rows, cols = _check_size(size)
    if mask.shape == (rows, cols):
        return mask.astype(bool, copy=True)
    as_float = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[None, None]
    out = F.interpolate(as_float, size=(rows, cols), mode="bilinear", antialias=True)
    return (out[0, 0] > MASK_RESAMPLE_THRESHOLD).numpy()

"""The error of 2-D image sets (kept here until it joins :mod:`src_train.errors`)."""

from __future__ import annotations

from src_train.errors import LunaSegError


class ImageSetError(LunaSegError):
    """A 2-D image folder cannot be used: empty, unreadable, unpaired, or not 2-D images."""

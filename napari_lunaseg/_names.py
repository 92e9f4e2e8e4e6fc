"""Readable names the viewer shows (no Qt, no napari: the Qt-free models use them too)."""

from __future__ import annotations


def short_name(series_uid: str, max_chars: int = 16) -> str:
    """A readable layer name for a (long, LUNA16-style) series UID: its last digits."""
    return series_uid if len(series_uid) <= max_chars else "…" + series_uid[-(max_chars - 8) :]

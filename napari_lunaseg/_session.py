"""State shared by the widgets of one viewer (e.g. the checkpoint a training run produced)."""

from __future__ import annotations

import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any, Generic, TypeVar

from psygnal import Signal

T = TypeVar("T")


class PerViewer(Generic[T]):
    """One object per viewer, made by ``make()`` on first use and dropped with the viewer."""

    def __init__(self, make: Callable[[], T]) -> None:
        self._make = make
        self._objects: weakref.WeakKeyDictionary[Any, T] = weakref.WeakKeyDictionary()

    def get(self, viewer: Any) -> T:
        """The object of ``viewer`` (made now if it has none)."""
        found = self._objects.get(viewer)
        if found is None:
            found = self._objects[viewer] = self._make()
        return found


class Session:
    """Per-viewer shared state. ``checkpoint_changed(path)`` fires when a training run ends."""

    checkpoint_changed = Signal(object)

    def __init__(self) -> None:
        self.best_checkpoint: Path | None = None

    def set_checkpoint(self, path: Path) -> None:
        """Publish a checkpoint for the inference widget(s) of this viewer."""
        self.best_checkpoint = Path(path)
        self.checkpoint_changed.emit(self.best_checkpoint)


_SESSIONS = PerViewer(Session)


def session_for(viewer: Any) -> Session:
    """The session of ``viewer`` (created on first use, dropped with the viewer)."""
    return _SESSIONS.get(viewer)

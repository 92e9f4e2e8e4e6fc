"""State shared by the widgets of one viewer (e.g. the checkpoint a training run produced)."""

from __future__ import annotations

import weakref
from pathlib import Path
from typing import Any

from psygnal import Signal


class Session:
    """Per-viewer shared state. ``checkpoint_changed(path)`` fires when a training run ends."""

    checkpoint_changed = Signal(object)

    def __init__(self) -> None:
        self.best_checkpoint: Path | None = None

    def set_checkpoint(self, path: Path) -> None:
        """Publish a checkpoint for the inference widget(s) of this viewer."""
        self.best_checkpoint = Path(path)
        self.checkpoint_changed.emit(self.best_checkpoint)


_SESSIONS: weakref.WeakKeyDictionary[Any, Session] = weakref.WeakKeyDictionary()


def session_for(viewer: Any) -> Session:
    """The session of ``viewer`` (created on first use, dropped with the viewer)."""
    session = _SESSIONS.get(viewer)
    if session is None:
        session = _SESSIONS[viewer] = Session()
    return session

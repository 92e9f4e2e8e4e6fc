"""Nodules sent to review by other widgets (the Inference widget: false-positive candidates as
proposed additions, missed nodules to check): one inbox per viewer, which the review panel of
Mask QA takes from series by series."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psygnal import Signal

from napari_lunaseg import PLUGIN
from napari_lunaseg._session import PerViewer
from src_train.evaluate.review_requests import ReviewRequest


class ReviewInbox:
    """Nodules sent to review in one viewer; the review panel takes them per series."""

    received = Signal()

    def __init__(self) -> None:
        self.pending: list[ReviewRequest] = []
        self.listening = 0

    def send(self, requests: Sequence[ReviewRequest]) -> None:
        """Queue ``requests`` and tell the panel."""
        self.pending.extend(requests)
        self.received.emit()

    def take(self, series_uid: str) -> list[ReviewRequest]:
        """Remove and return the requests of one series."""
        mine = [r for r in self.pending if r.series_uid == series_uid]
        self.pending = [r for r in self.pending if r.series_uid != series_uid]
        return mine


_INBOXES = PerViewer(ReviewInbox)


def inbox_for(viewer: Any) -> ReviewInbox:
    """The inbox of ``viewer`` (made on first use, dropped with the viewer)."""
    return _INBOXES.get(viewer)


def send_to_review(viewer: Any, requests: Sequence[ReviewRequest]) -> None:
    """Send nodules to the review panel of ``viewer`` (Mask QA is opened when it is not)."""
    inbox = inbox_for(viewer)
    inbox.send(requests)
    if not inbox.listening:
        viewer.window.add_plugin_dock_widget(PLUGIN, "Mask QA")

"""What the canvas shows for the task at hand: which layers, which caption, which 3-D view.

Each task (Mask QA, growth replay, Inference, Review) owns some layer roles. When a task starts
(:func:`show_task`) its layers are shown and the other tasks' layers hidden; a layer added
later by another task stays hidden until that task starts. The user can turn any layer back on.
Green, orange and red mean TP, FN and FP only (``src_train.colors``); everything else is drawn
from the second palette there.

The canvas's text overlay says which slice is shown (2-D only), what the visible layers' colours
mean (the legend) and the notices of the CT layer. Turning the view to 3-D shows the CT as a
maximum intensity projection in the bone window (the lung window saturates a projection) and
the whole volume; turning back to 2-D restores the CT's window.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable
from typing import Any

from napari_lunaseg._layers import (
    ROLE_BOXES,
    ROLE_CANDIDATES,
    ROLE_CT,
    ROLE_ERROR,
    ROLE_GROWTH,
    ROLE_MASK,
    ROLE_NODULES,
    ROLE_PRED,
    ROLE_PROB,
    ROLE_PROBES,
    ROLE_REVIEW_ADD,
    ROLE_REVIEW_BOX,
    ROLE_REVIEW_EDIT,
    ROLE_REVIEWED,
    ROLE_TRUTH,
    layer_info,
)
from src_train.colors import MIP_WINDOW_HU

#: The tasks.
MASK_QA = "Mask QA"
GROWTH = "growth replay"
INFERENCE = "Inference"
REVIEW = "Review"

#: Layer roles each task shows (a role may belong to several tasks).
TASK_ROLES: dict[str, frozenset[str]] = {
    MASK_QA: frozenset({ROLE_MASK, ROLE_TRUTH, ROLE_NODULES, ROLE_BOXES}),
    GROWTH: frozenset({ROLE_MASK, ROLE_GROWTH, ROLE_PROBES}),
    INFERENCE: frozenset({ROLE_PROB, ROLE_PRED, ROLE_ERROR, ROLE_CANDIDATES}),
    REVIEW: frozenset(
        {ROLE_MASK, ROLE_TRUTH, ROLE_REVIEWED, ROLE_REVIEW_BOX, ROLE_REVIEW_EDIT, ROLE_REVIEW_ADD}
    ),
}
#: Roles some task owns (other layers, the CT and foreign ones, are never hidden).
TASK_OWNED = frozenset().union(*TASK_ROLES.values())

#: What a visible layer of each role adds to the legend (colours of ``src_train.colors``).
LEGEND: dict[str, str] = {
    ROLE_ERROR: "green TP, orange FN (missed), red FP voxels",
    ROLE_CANDIDATES: "cyan ring: candidate at or above the score threshold",
    ROLE_PRED: "cyan: predicted mask",
    ROLE_PROB: "purple: probability",
    ROLE_MASK: "blue: mask grown from the points",
    ROLE_TRUTH: "violet outline: true shape",
    ROLE_NODULES: "yellow ring: annotated nodule",
    ROLE_BOXES: "yellow: mask boxes",
    ROLE_GROWTH: "magenta: box so far",
    ROLE_PROBES: "probes: cyan dense (grow on), yellow stopped",
    ROLE_REVIEWED: "white outline: reviewed ground truth",
    ROLE_REVIEW_BOX: "cyan box: nodule under review",
    ROLE_REVIEW_EDIT: "magenta: correction",
}


class Screen:
    """The task, legend and caption of one viewer (see the module docstring)."""

    def __init__(self, viewer: Any) -> None:
        self._viewer = weakref.ref(viewer)
        self.task: str | None = None
        #: Lines before the legend (the slice caption, set by ``follow_ct_slices``).
        self.caption: Callable[[], list[str]] | None = None
        #: Lines after the legend (the CT layer's notices).
        self.notices: list[str] = []
        #: The CT layer whose slices the slider counts, and the handler that keeps them.
        self.followed: tuple[Any, Callable[..., None]] | None = None
        self._window: dict[int, tuple[Any, str]] = {}
        viewer.layers.events.inserted.connect(self._on_inserted)
        viewer.dims.events.ndisplay.connect(self._on_ndisplay)
        viewer.dims.events.point.connect(self.update_text)
        for layer in viewer.layers:
            layer.events.visible.connect(self.update_text)

    @property
    def viewer(self) -> Any:
        """The viewer (None once it is gone)."""
        return self._viewer()

    def show_task(self, task: str) -> None:
        """Show ``task``'s layers, hide the other tasks' ones, update the legend."""
        self.task = task
        viewer = self.viewer
        if viewer is None:
            return
        shown = TASK_ROLES[task]
        for layer in viewer.layers:
            role = layer_info(layer).get("role")
            if role in TASK_OWNED:
                layer.visible = role in shown
        self.update_text()

    def _on_inserted(self, event: Any) -> None:
        layer = event.value
        role = layer_info(layer).get("role")
        if self.task is not None and role in TASK_OWNED and role not in TASK_ROLES[self.task]:
            layer.visible = False
        layer.events.visible.connect(self.update_text)
        if role == ROLE_CT:
            self.follow_new_ct(layer)
        self.update_text()

    def follow_new_ct(self, layer: Any) -> None:
        """Count the slider in ``layer``'s slices and caption the slice shown (a CT just added)."""
        from napari_lunaseg._viewer_utils import follow_ct_slices

        viewer = self.viewer
        if viewer is not None:
            follow_ct_slices(viewer, layer)

    def legend(self) -> list[str]:
        """One entry per kind of visible LunaSeg layer, top layer first."""
        viewer = self.viewer
        if viewer is None:
            return []
        entries: list[str] = []
        for layer in reversed(list(viewer.layers)):
            text = LEGEND.get(layer_info(layer).get("role", ""))
            if layer.visible and text and text not in entries:
                entries.append(text)
        return entries

    def update_text(self, _event: Any = None) -> None:
        """Rewrite the canvas's text overlay: slice caption (2-D), legend, notices."""
        viewer = self.viewer
        if viewer is None:
            return
        lines = []
        if self.caption is not None and viewer.dims.ndisplay == 2:
            lines += self.caption()
        legend = self.legend()
        if legend:
            lines += wrap_entries(legend)
        lines += self.notices
        overlay = viewer.canvas.overlays.text
        overlay.position = "top_left"
        overlay.font_size = OVERLAY_FONT_SIZE
        overlay.color = "yellow" if self.notices else "white"
        overlay.text = "\n".join(lines)
        overlay.visible = bool(lines)

    def _on_ndisplay(self, _event: Any = None) -> None:
        viewer = self.viewer
        if viewer is None:
            return
        cts = [ly for ly in viewer.layers if layer_info(ly).get("role") == ROLE_CT]
        if viewer.dims.ndisplay == 3:
            for layer in cts:
                self._window[id(layer)] = (tuple(layer.contrast_limits), str(layer.rendering))
                layer.rendering = "mip"
                layer.contrast_limits = MIP_WINDOW_HU
            viewer.reset_view()  # the whole volume, not the last nodule's close-up
        else:
            for layer in cts:
                saved = self._window.pop(id(layer), None)
                if saved is not None:
                    layer.contrast_limits, layer.rendering = saved
        self.update_text()


#: Font size of the canvas's text overlay, points.
OVERLAY_FONT_SIZE = 10
#: Characters per legend line.
LEGEND_LINE_CHARS = 48


def wrap_entries(entries: Iterable[str]) -> list[str]:
    """Legend entries joined by `` · `` into lines of at most :data:`LEGEND_LINE_CHARS`."""
    lines: list[str] = []
    for entry in entries:
        if lines and len(lines[-1]) + 3 + len(entry) <= LEGEND_LINE_CHARS:
            lines[-1] += " · " + entry
        else:
            lines.append(entry)
    return lines


_SCREENS: weakref.WeakKeyDictionary[Any, Screen] = weakref.WeakKeyDictionary()


def screen_for(viewer: Any) -> Screen:
    """The screen of ``viewer`` (made on first use, dropped with the viewer)."""
    screen = _SCREENS.get(viewer)
    if screen is None:
        screen = _SCREENS[viewer] = Screen(viewer)
    return screen


def watch_opening_viewer() -> None:
    """Give the viewer layers are being opened into (napari's current one; none outside a
    viewer) its screen, so that the CT layer napari is about to add gets the slice slider and
    caption of ``lunaseg view`` (:meth:`Screen.follow_new_ct`) whichever way it is opened: the
    reader (File > Open, drag and drop) and the sample (File > Open Sample) call it."""
    from napari import current_viewer

    viewer = current_viewer()
    if viewer is not None:
        screen_for(viewer)


def show_task(viewer: Any, task: str) -> None:
    """Show ``task``'s layers in ``viewer`` and hide the other tasks' (see :class:`Screen`)."""
    screen_for(viewer).show_task(task)

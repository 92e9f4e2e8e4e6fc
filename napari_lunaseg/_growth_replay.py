"""Step-by-step replay of one nodule's bounding-box growth (the SPEC's rule, method ``grow``).

For the selected nodule the panel walks through its :class:`~src_train.masks.GrowthStep`
records: the box reached so far (a shapes layer) and the two voxels tested at ``center +- r``
(a points layer, cyan when dense, yellow when not), with a line naming the side that stopped
it. The slider counts steps as the text does, from 1. Playing or moving the slider starts the
growth-replay task (:mod:`._screen`): its layers shown, the other tasks' hidden.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from magicgui.widgets import Container, PushButton, Slider
from napari.utils.notifications import show_info
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QGroupBox, QVBoxLayout

from napari_lunaseg._layers import ROLE_GROWTH, ROLE_PROBES, hex_color, lunaseg_meta, short_name
from napari_lunaseg._screen import GROWTH, show_task
from napari_lunaseg._viewer_utils import (
    box_rectangles,
    find_layer,
    keep_selection,
    make_wrapping_label,
    set_box_shapes,
    zoom_to_nodule,
)
from src_train.colors import GROWTH_BOX_RGB, PROBE_DENSE_RGB, PROBE_STOP_RGB
from src_train.ct import CtVolume
from src_train.masks import AXIS_NAMES, GrowthStep, NoduleMask

#: Interval between growth steps when replaying, ms.
REPLAY_INTERVAL_MS = 350
#: How the replay names the side that stopped a growth step (``GrowthStep.stopped_by``).
STOP_REASONS = {
    "minus": "the -r side",
    "plus": "the +r side",
    "both": "both sides",
    "edge": "the volume edge",
}
GROWTH_COLOR = hex_color(GROWTH_BOX_RGB)
PROBE_DENSE_COLOR = hex_color(PROBE_DENSE_RGB)
PROBE_FAIL_COLOR = hex_color(PROBE_STOP_RGB)
PLAY_TEXT = "▶ Replay growth"
STOP_TEXT = "■ Stop"


class GrowthReplay(QGroupBox):
    """A step slider, a play button and a line of text for one nodule's growth."""

    def __init__(self, viewer: Any) -> None:
        super().__init__("Bounding-box growth")
        self.viewer = viewer
        self.ct: CtVolume | None = None
        self.record: NoduleMask | None = None
        self.number = 0
        self._loading = False
        self.step = Slider(label="step", min=1, max=1, value=1)
        self.play_button = PushButton(text=PLAY_TEXT)
        self.text = make_wrapping_label("Select a nodule in the table to replay its box growth.")
        layout = QVBoxLayout(self)
        layout.addWidget(Container(widgets=[self.step, self.play_button]).native)
        layout.addWidget(self.text)
        self._timer = QTimer(self)
        self._timer.setInterval(REPLAY_INTERVAL_MS)
        self._timer.timeout.connect(self._tick)
        self.step.changed.connect(self._on_step_moved)
        self.play_button.changed.connect(self.toggle)

    @property
    def interval_ms(self) -> int:
        """Time between steps while playing, ms."""
        return int(self._timer.interval())

    @interval_ms.setter
    def interval_ms(self, value: int) -> None:
        self._timer.setInterval(int(value))

    @property
    def playing(self) -> bool:
        """True while the replay advances on its own."""
        return self._timer.isActive()

    def load(self, ct: CtVolume, record: NoduleMask | None, number: int) -> None:
        """Show nodule ``number`` (1-based, as in the table); None clears the panel."""
        self.ct, self.record, self.number = ct, record, number
        if record is None:
            self.stop()
            return
        self._loading = True
        try:
            self.step.max = max(len(record.steps), 1)
            if self.step.value > self.step.max:
                self.step.value = self.step.max
        finally:
            self._loading = False
        self.show_step(self.step.value)

    def _on_step_moved(self, step: int) -> None:
        if self._loading:
            return
        self.show_step(step)
        show_task(self.viewer, GROWTH)

    def stop(self) -> None:
        """Stop playing."""
        self._timer.stop()
        self.play_button.text = PLAY_TEXT

    def toggle(self) -> None:
        """Play from the first step, or stop."""
        if self.playing:
            self.stop()
            return
        if self.record is None:
            show_info("Select a nodule in the table first.")
            return
        # the nodule's slice, zoomed so its growth is seen (the view may have moved since)
        zoom_to_nodule(self.viewer, self.record.center_xyz_mm, self.record.nodule.diameter_mm)
        self.step.value = self.step.min
        show_task(self.viewer, GROWTH)
        self.play_button.text = STOP_TEXT
        self._timer.start()

    def _tick(self) -> None:
        if self.step.value >= self.step.max:
            self.stop()
            return
        self.step.value = self.step.value + 1

    def show_step(self, step_number: int) -> None:
        """Show growth step ``step_number`` (1-based, as the slider and the text count):
        the box so far, the probes and what they found."""
        record, ct = self.record, self.ct
        if record is None or ct is None:
            return
        if not record.steps:
            self.text.setText(
                f"Nodule {self.number}: method {record.method!r} has no growth steps."
            )
            return
        number = int(np.clip(step_number, 1, len(record.steps)))
        step = record.steps[number - 1]
        radii = [0, 0, 0]
        for axis in range(step.axis):
            radii[axis] = record.radius_irc[axis]
        radii[step.axis] = step.radius
        center = np.asarray(record.center_irc)
        lo = np.maximum(center - radii, 0)
        hi = np.minimum(center + radii + 1, ct.shape_irc)
        set_box_shapes(
            self.viewer,
            ct,
            ROLE_GROWTH,
            f"{short_name(ct.series_uid)} growth",
            box_rectangles(lo, hi),
            GROWTH_COLOR,
        )
        self._show_probes(ct, record, step)
        self.text.setText(
            f"Nodule {self.number}, step {number}/{len(record.steps)}: "
            f"{describe_step(step, record.threshold_hu)}. "
            f"Final radius i,r,c = {', '.join(map(str, record.radius_irc))}."
        )

    def _show_probes(self, ct: CtVolume, record: NoduleMask, step: GrowthStep) -> None:
        center = np.asarray(record.center_irc, dtype=float)
        points, colors = [], []
        for sign, value in ((-1, step.hu_minus), (1, step.hu_plus)):
            if value is None:
                continue
            probe = center.copy()
            probe[step.axis] += sign * step.radius
            points.append(probe)
            colors.append(PROBE_DENSE_COLOR if value > record.threshold_hu else PROBE_FAIL_COLOR)
        layer = find_layer(self.viewer, ROLE_PROBES, ct.series_uid)
        data = np.array(points).reshape(-1, 3)
        if layer is None:
            with keep_selection(self.viewer):
                layer = self.viewer.add_points(
                    data,
                    name=f"{short_name(ct.series_uid)} growth probes",
                    affine=ct.geometry.affine_irc_to_zyx(),
                    size=1.5,
                    face_color=colors or "white",
                    metadata=lunaseg_meta(ROLE_PROBES, ct.geometry, ct.series_uid),
                    ndim=3,
                )
        else:
            layer.data = data
            if colors:
                layer.face_color = colors


def describe_step(step: GrowthStep, threshold_hu: float) -> str:
    """One line for a growth step: the radius tested, the HU found at both sides, the verdict."""
    minus = "outside" if step.hu_minus is None else f"{step.hu_minus:.0f} HU"
    plus = "outside" if step.hu_plus is None else f"{step.hu_plus:.0f} HU"
    if step.accepted:
        outcome = "both sides dense: grow on"
    else:
        outcome = f"stopped by {STOP_REASONS.get(step.stopped_by, step.stopped_by)}"
        if step.stopped_by != "edge":
            outcome += f" (not > {threshold_hu:.0f} HU)"
    return f"{AXIS_NAMES[step.axis]} radius {step.radius}: at -r {minus}, at +r {plus}: {outcome}"

"""Review speed on the happy path: keys only, on a shown napari viewer (run it under Xvfb)::

    xvfb-run -a -s "-screen 0 1600x1200x24" .venv/bin/python benchmarks/bench_review_keys.py

A synthetic data set of full-size scans (448-512 px, 110-190 slices, 5 nodules each) is written
to a temporary folder; its first series is opened with Mask QA and review mode started. Per
nodule it times, from the key press until the canvas has drawn the new view:

* baseline: selecting the next row of Mask QA's nodule table (the jump a reviewer had before
  review mode: look at the nodule, record nothing);
* ``N``: review mode's next nodule (jump, box, table; nothing recorded);
* ``A``: accept (a row appended to reviews.csv under the lock, the reviewed ground truth and
  progress recomputed, the table refreshed) and on to the next nodule.

Then, with ``A`` kept pressed through the last nodule, the move to the next series (opening it)
is timed apart. Everything runs in one process on one viewer, so the figures compare.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtTest import QTest
from qtpy.QtWidgets import QApplication

PLUGIN = "napari-lunaseg"
NODULES_PER_SCAN = 5
#: Longest wait for one frame after a key press, s.
FRAME_TIMEOUT_S = 30.0


def _summary(name: str, values_s: list[float]) -> str:
    ms = np.asarray(values_s) * 1000.0
    return (
        f"{name:<52} n={len(ms):>3}  median {statistics.median(ms):7.1f} ms  "
        f"mean {ms.mean():7.1f} ms  max {ms.max():7.1f} ms"
    )


class FrameClock:
    """Times an action until the canvas has drawn a frame after it."""

    def __init__(self, viewer) -> None:  # type: ignore[no-untyped-def]
        # napari has no public draw event; the benchmark listens to vispy's.
        self.canvas = viewer.window._qt_viewer.canvas
        self.canvas._scene_canvas.events.draw.connect(self._on_draw)
        self.last_draw = 0.0

    def _on_draw(self, _event) -> None:  # type: ignore[no-untyped-def]
        self.last_draw = time.perf_counter()

    def time(self, action: Callable[[], None]) -> float:
        """Seconds from ``action()`` to the end of the next drawn frame."""
        QApplication.processEvents()
        start = time.perf_counter()
        action()
        end = start + FRAME_TIMEOUT_S
        while self.last_draw < start and time.perf_counter() < end:
            QApplication.processEvents()
        return self.last_draw - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scans", type=int, default=2, help="scans in the data set")
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args(argv)

    import napari

    from src_train.luna import LunaFolder
    from src_train.synth import SynthConfig, write_dataset

    with tempfile.TemporaryDirectory(prefix="lunaseg-bench-review-") as tmp:
        os.environ["LUNASEG_CONFIG_DIR"] = str(Path(tmp) / "config")
        started = time.perf_counter()
        config = SynthConfig(nodules_per_scan_range=(NODULES_PER_SCAN, NODULES_PER_SCAN))
        folder: LunaFolder = write_dataset(
            Path(tmp) / "data", n_scans=args.scans, seed=args.seed, config=config
        )
        uid = folder.series_uids[0]
        print(
            f"data: {args.scans} synthetic scans, first {folder.load(uid).shape_irc} (index, "
            f"row, col), {NODULES_PER_SCAN} nodules each; written in "
            f"{time.perf_counter() - started:.0f} s"
        )
        viewer = napari.Viewer(show=True)
        viewer.window._qt_window.resize(1500, 950)
        viewer.open(str(folder.series_path(uid)), plugin=PLUGIN)
        _dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Mask QA")
        panel = widget.review
        clock = FrameClock(viewer)
        canvas = clock.canvas.native
        n = len(widget.state.records)

        table_s = [clock.time(lambda k=k: widget.table.selectRow(k)) for k in range(n)]

        panel.reviewer.setText("bench")
        widget.tools.setCurrentWidget(panel)
        panel.set_active(True)
        canvas.setFocus()

        def key(code: Qt.Key, shift: bool = False) -> Callable[[], None]:
            mod = Qt.KeyboardModifier.ShiftModifier if shift else Qt.KeyboardModifier.NoModifier
            return lambda: QTest.keyClick(canvas, code, mod)

        next_s = [clock.time(key(Qt.Key.Key_N)) for _ in range(n - 1)]
        for _ in range(n - 1):
            clock.time(key(Qt.Key.Key_N, shift=True))
        accept_s = [clock.time(key(Qt.Key.Key_A)) for _ in range(n - 1)]
        assert panel.index == n - 1 and len(panel.book.rows) == n - 1  # type: ignore[union-attr]
        switch_s = clock.time(key(Qt.Key.Key_A))  # the last nodule: on to the next series
        moved = panel.view.ct.series_uid != uid  # type: ignore[union-attr]

        print(_summary("baseline: Mask QA table row (jump only)", table_s))
        print(_summary("review N: next nodule (nothing recorded)", next_s))
        print(_summary("review A: accept + next nodule", accept_s))
        print(
            f"review A on the last nodule: {switch_s * 1000:.0f} ms, the next series "
            f"{'opened' if moved else 'NOT opened'} (reading it from disk and growing its masks)"
        )
        print(
            f"per nodule, keys only: A costs {statistics.median(accept_s) * 1000:.0f} ms "
            f"(median) against {statistics.median(table_s) * 1000:.0f} ms for the jump alone"
        )
        viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""GUI test of the Review tab in suspicion order: Score… ranks the folder, Start review goes
to the most suspicious nodule, A records the verdict in reviews.csv as always and moves on to
the next most suspicious one, in whichever series it is."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import PLUGIN, dock
from qtpy.QtCore import Qt

from src_train.luna import LunaFolder
from src_train.qa import read_suspicious
from src_train.reviews import REVIEWS_CSV, read_reviews, reviews_dir

pytestmark = pytest.mark.gui

REVIEWER = "Ann Reviewer"


@pytest.fixture(autouse=True)
def config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "config"
    monkeypatch.setenv("LUNASEG_CONFIG_DIR", str(folder))
    return folder


def _wrong_diameter(tiny_synth_dir: Path, tmp_path: Path) -> tuple[Path, str, int]:
    """A copy of the tiny data set in which the last series' first annotation got 3x its
    diameter; returns the folder, that series and the row's index in its series."""
    root = tmp_path / "data"
    shutil.copytree(tiny_synth_dir, root)
    path = root / "annotations.csv"
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    uid = LunaFolder(root).series_uids[-1]
    k = next(i for i, r in enumerate(rows) if r["seriesuid"] == uid)
    rows[k]["diameter_mm"] = f"{3 * float(rows[k]['diameter_mm']):.6f}"
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root, uid, 0


def test_review_walks_in_suspicion_order(make_napari_viewer, qtbot, tiny_synth_dir, tmp_path):
    root, bad_uid, bad_k = _wrong_diameter(tiny_synth_dir, tmp_path)
    folder = LunaFolder(root)
    first_uid = folder.series_uids[0]
    viewer = make_napari_viewer(show=True)
    viewer.open(str(folder.series_path(first_uid)), plugin=PLUGIN)
    widget = dock(viewer, "Mask QA")
    tabs = widget.tools.tabBar()
    qtbot.mouseClick(tabs, Qt.MouseButton.LeftButton, pos=tabs.tabRect(1).center())
    panel = widget.review
    controls = panel.suspicion
    assert not controls.walk.isEnabled() and "not scored" in controls.status.text()

    qtbot.mouseClick(controls.score_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: controls.order is not None, timeout=120_000)
    entries = read_suspicious(root / "qa" / "suspicious.csv")
    assert controls.walk.isChecked() and len(controls.order.entries) == len(entries)
    # the inflated annotation is the most suspicious one, for a size reason
    top = entries[0]
    wrong = folder.nodules(bad_uid)[bad_k]
    assert top.series_uid == bad_uid
    np.testing.assert_allclose(top.center_xyz_mm, wrong.center_xyz_mm, atol=1e-4)
    assert {"large", "thin"} & set(top.reasons)

    qtbot.keyClicks(panel.reviewer, REVIEWER)
    qtbot.mouseClick(panel.start_button, Qt.MouseButton.LeftButton)
    # Start review opened the most suspicious nodule's series and made it current
    qtbot.waitUntil(lambda: widget.ct.series_uid == bad_uid, timeout=60_000)
    item = panel.items[panel.index]
    np.testing.assert_allclose(item.nodule.center_xyz_mm, top.center_xyz_mm, atol=1e-3)
    assert f"suspicion {top.suspicion:.2f}" in panel.current.text()
    column = list(
        panel.table.horizontalHeaderItem(c).text() for c in range(panel.table.columnCount())
    )
    shown = panel.table.item(panel.index, column.index("suspicion")).text()
    assert shown.startswith(f"{top.suspicion:.2f} (")

    # A: the verdict lands in reviews.csv; the next most suspicious nodule becomes current
    canvas = viewer.window._qt_viewer.canvas.native
    canvas.setFocus()
    qtbot.keyClick(canvas, Qt.Key.Key_A)
    (row,) = read_reviews(reviews_dir(root) / REVIEWS_CSV).rows
    assert (row.status, row.reviewer, row.series_uid) == ("accepted", REVIEWER, bad_uid)
    np.testing.assert_allclose(row.center_xyz_mm, top.center_xyz_mm, atol=1e-3)
    second = entries[1]
    qtbot.waitUntil(lambda: widget.ct.series_uid == second.series_uid, timeout=60_000)
    current = panel.items[panel.index].nodule.center_xyz_mm
    np.testing.assert_allclose(current, second.center_xyz_mm, atol=1e-3)
    # Shift+N goes back up the order
    qtbot.keyClick(
        viewer.window._qt_viewer.canvas.native, Qt.Key.Key_N, Qt.KeyboardModifier.ShiftModifier
    )
    qtbot.waitUntil(lambda: widget.ct.series_uid == bad_uid, timeout=60_000)
    current = panel.items[panel.index].nodule.center_xyz_mm
    np.testing.assert_allclose(current, top.center_xyz_mm, atol=1e-3)


def test_suspicion_order_steps_and_where_each_reviewer_starts(tmp_path: Path) -> None:
    from napari_lunaseg._review_order import SuspicionOrder
    from src_train.qa import SuspicionEntry
    from src_train.reviews import ReviewBook, record_verdict

    a, b, c = (0.0, 0.0, 0.0), (10.0, 0.0, 0.0), (0.0, 20.0, 0.0)
    order = SuspicionOrder(
        [
            SuspicionEntry("s2", a, 0.9, ("air",), 0),
            SuspicionEntry("s1", b, 0.7, ("thin",), 1),
            SuspicionEntry("s2", c, 0.1, (), 2),
        ]
    )
    assert order.step("s2", (0.2, 0.0, 0.0), +1).center_xyz_mm == b  # within 0.5 mm: a
    assert order.step("s1", b, +1).series_uid == "s2" and order.step("s2", c, +1) is None
    assert order.step("s2", a, -1) is None and order.step("s9", a, +1).rank == 0
    folder = tmp_path / "reviews"
    record_verdict(folder, "s2", a, 5.0, "accepted", "alice")
    book = ReviewBook(folder)
    assert order.first_unreviewed(book).rank == 1  # a has a verdict
    assert order.first_unreviewed(book, "bob").rank == 0  # but none of bob's
    assert order.first_unreviewed(book, "alice").rank == 1

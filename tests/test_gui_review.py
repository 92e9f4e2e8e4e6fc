"""GUI tests of review mode (Mask QA > Review), driven as a reviewer does: keys typed into the
shown canvas, buttons clicked, a correction painted with napari's eraser, a nodule added by a
click; then napari closed and opened again."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import PLUGIN, dock, layer_with_role
from qtpy.QtCore import QPoint, Qt

from napari_lunaseg._viewer_utils import jump_to
from src_train.luna import LunaFolder
from src_train.reviews import (
    REVIEW_COLUMNS,
    REVIEWS_CSV,
    ReviewBook,
    apply_book,
    labels_file_name,
    load_labels,
    read_reviews,
    reviews_dir,
)

pytestmark = pytest.mark.gui

REVIEWER = "Ann Reviewer"
JOB_TIMEOUT_MS = 120_000


@pytest.fixture(autouse=True)
def config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The reviewer's name is remembered in tmp_path, never in the home folder."""
    folder = tmp_path / "config"
    monkeypatch.setenv("LUNASEG_CONFIG_DIR", str(folder))
    return folder


@pytest.fixture
def data(tiny_synth_dir: Path, tmp_path: Path) -> tuple[Path, str]:
    """A copy of the tiny data set whose first series lost the annotation of one true nodule
    (a nodule the annotators missed). Returns the folder and that series' UID."""
    root = tmp_path / "data"
    shutil.copytree(tiny_synth_dir, root)
    folder = LunaFolder(root)
    uid = next(u for u in folder.series_uids if len(folder.nodules(u)) >= 4)
    lines = (root / "annotations.csv").read_text().splitlines(keepends=True)
    last = max(k for k, line in enumerate(lines) if line.startswith(uid))
    (root / "annotations.csv").write_text("".join(lines[:last] + lines[last + 1 :]))
    return root, uid


def _canvas(viewer):  # type: ignore[no-untyped-def]
    """The canvas a reviewer types into (napari offers no public handle on it)."""
    return viewer.window._qt_viewer.canvas.native


def _press(qtbot, viewer, key, shift: bool = False) -> None:  # type: ignore[no-untyped-def]
    canvas = _canvas(viewer)
    canvas.setFocus()
    modifier = Qt.KeyboardModifier.ShiftModifier if shift else Qt.KeyboardModifier.NoModifier
    qtbot.keyClick(canvas, key, modifier)


def _click_canvas_center(qtbot, viewer, dx: int = 0) -> None:  # type: ignore[no-untyped-def]
    canvas = _canvas(viewer)
    qtbot.mouseClick(canvas, Qt.MouseButton.LeftButton, pos=canvas.rect().center() + QPoint(dx, 0))


def _open_review(viewer, qtbot, root: Path, uid: str):  # type: ignore[no-untyped-def]
    viewer.open(str(LunaFolder(root).series_path(uid)), plugin=PLUGIN)
    widget = dock(viewer, "Mask QA")
    tabs = widget.tools.tabBar()
    qtbot.mouseClick(tabs, Qt.MouseButton.LeftButton, pos=tabs.tabRect(1).center())
    assert widget.tools.currentWidget() is widget.review
    return widget, widget.review


def _rows(root: Path):  # type: ignore[no-untyped-def]
    return read_reviews(reviews_dir(root) / REVIEWS_CSV).rows


def _at_nodule(viewer, center_xyz_mm, spacing_z_mm: float) -> bool:  # type: ignore[no-untyped-def]
    return abs(viewer.dims.point[0] - center_xyz_mm[2]) <= spacing_z_mm


def test_review_by_keys_and_buttons_survives_closing_napari(
    make_napari_viewer, qtbot, data
) -> None:
    root, uid = data
    folder = LunaFolder(root)
    viewer = make_napari_viewer(show=True)
    widget, panel = _open_review(viewer, qtbot, root, uid)
    nodules = widget.series_view().annotations
    dz = widget.ct.geometry.spacing_xyz_mm[2]

    qtbot.keyClicks(panel.reviewer, REVIEWER)
    qtbot.keyClick(panel.reviewer, Qt.Key.Key_Return)
    qtbot.mouseClick(panel.start_button, Qt.MouseButton.LeftButton)
    assert panel.active and _at_nodule(viewer, nodules[0].center_xyz_mm, dz)

    # A: accepted, and the view moves on to the next nodule
    _press(qtbot, viewer, Qt.Key.Key_A)
    (row,) = _rows(root)
    assert (row.status, row.reviewer, row.series_uid) == ("accepted", REVIEWER, uid)
    np.testing.assert_allclose(row.center_xyz_mm, nodules[0].center_xyz_mm, atol=1e-3)
    assert panel.index == 1 and _at_nodule(viewer, nodules[1].center_xyz_mm, dz)

    # a note, then R: rejected with that note
    qtbot.keyClicks(panel.note, "a vessel")
    qtbot.keyClick(panel.note, Qt.Key.Key_Return)
    _press(qtbot, viewer, Qt.Key.Key_R)
    row = _rows(root)[-1]
    assert (row.status, row.note) == ("rejected", "a vessel") and panel.index == 2

    # Correct: the nodule's voxels on a labels layer; erase some with napari's eraser; Save
    qtbot.mouseClick(panel.correct_button, Qt.MouseButton.LeftButton)
    edit = panel.edit_layer
    grown = np.asarray(edit.data) != 0
    assert viewer.layers.selection.active is edit and grown.any()
    _press(qtbot, viewer, Qt.Key.Key_E)  # napari's key for the label eraser
    assert edit.mode == "erase"
    _click_canvas_center(qtbot, viewer)
    painted = np.asarray(edit.data) != 0
    assert 0 < painted.sum() < grown.sum()
    qtbot.mouseClick(panel.save_button, Qt.MouseButton.LeftButton)
    row = _rows(root)[-1]
    assert row.status == "corrected" and row.label == 1 and panel.edit_layer is None
    labels = load_labels(reviews_dir(root) / labels_file_name(uid), widget.ct.geometry)
    np.testing.assert_array_equal(labels == row.label, painted)  # type: ignore[operator]

    # Add: go to the nodule the annotators missed, click it
    missed = folder.true_nodules(uid)[-1]
    jump_to(viewer, missed.center_xyz_mm, zoom_mm=30.0)
    panel.diameter.setValue(round(missed.diameter_mm, 1))
    qtbot.mouseClick(panel.add_button, Qt.MouseButton.LeftButton)
    _click_canvas_center(qtbot, viewer)
    qtbot.waitUntil(lambda: _rows(root)[-1].status == "added", timeout=5000)
    row = _rows(root)[-1]
    spacing = np.asarray(widget.ct.geometry.spacing_xyz_mm)
    assert np.all(np.abs(np.subtract(row.center_xyz_mm, missed.center_xyz_mm)) <= spacing)
    assert row.diameter_mm == pytest.approx(round(missed.diameter_mm, 1))

    # the table: verdicts and their effect on Dice against the true shapes
    table = panel.table_rows()
    assert [r[2] for r in table] == ["accepted", "rejected", "corrected", "added"]
    assert table[1][5] == "0.000" and float(table[1][6]) < 0  # rejecting a true nodule hurts
    assert table[3][4] == "0.000" and float(table[3][5]) > 0.3  # adding the missed one helps
    total = sum(len(n) for n in folder.nodules_by_series.values()) + 1  # + the added one
    assert panel.progress.text() == f"4 / {total} reviewed, 1 rejected, 1 corrected, 1 added"
    reviewed_before = layer_with_role(viewer, "reviewed").data.astype(bool).copy()
    viewer.close()

    # napari again: the same verdicts, the same voxels, the reviewer's name remembered
    viewer = make_napari_viewer(show=True)
    widget, panel = _open_review(viewer, qtbot, root, uid)
    assert panel.reviewer.text() == REVIEWER
    assert [r[2] for r in panel.table_rows()] == ["accepted", "rejected", "corrected", "added"]
    shown = layer_with_role(viewer, "reviewed").data.astype(bool)
    np.testing.assert_array_equal(shown, reviewed_before)
    corrected = panel.items[2].reviewed.record
    own = np.zeros(shown.shape, dtype=bool)
    own[corrected.box_slices] = corrected.local_mask
    np.testing.assert_array_equal(own, painted)

    # and lunaseg mask writes exactly what the viewer shows
    from src_train.cli import main
    from src_train.ct import load_ct

    assert main(["mask", str(root), "--series", uid, "--out", str(root.parent / "m")]) == 0
    np.testing.assert_array_equal(load_ct(root.parent / "m" / f"{uid}_mask.mhd").hu > 0, shown)


def test_undo_key_and_moving_on_to_the_next_series(make_napari_viewer, qtbot, data) -> None:
    root, _ = data
    # start on a series that has another annotated series after it
    series = [u for u in LunaFolder(root).series_uids if LunaFolder(root).nodules(u)]
    uid = series[0]
    viewer = make_napari_viewer(show=True)
    widget, panel = _open_review(viewer, qtbot, root, uid)
    panel.reviewer.setText(REVIEWER)
    qtbot.mouseClick(panel.start_button, Qt.MouseButton.LeftButton)
    _press(qtbot, viewer, Qt.Key.Key_A)
    _press(qtbot, viewer, Qt.Key.Key_U)
    assert [r.status for r in _rows(root)] == ["accepted", "undone"]
    assert panel.index == 0 and panel.table_rows()[0][2] == "—"

    for _ in range(len(panel.items)):
        _press(qtbot, viewer, Qt.Key.Key_N)
    following = series[series.index(uid) + 1]
    assert widget.ct.series_uid == following and panel.index == 0
    assert {ly.metadata["lunaseg"]["series_uid"] for ly in viewer.layers} == {following}
    # still the review's layers on screen, the Mask QA boxes and points hidden
    assert layer_with_role(viewer, "review box").visible
    assert layer_with_role(viewer, "reviewed").visible
    assert not layer_with_role(viewer, "boxes").visible
    assert not layer_with_role(viewer, "nodules").visible
    _press(qtbot, viewer, Qt.Key.Key_N, shift=True)  # back: the last nodule of the first one
    assert widget.ct.series_uid == uid and panel.index == len(panel.items) - 1


def test_inference_sends_false_positives_and_missed_nodules_to_review(
    make_napari_viewer, qtbot, data
) -> None:
    root, uid = data
    viewer = make_napari_viewer(show=True)
    widget, panel = _open_review(viewer, qtbot, root, uid)
    panel.reviewer.setText(REVIEWER)
    inference = dock(viewer, "Inference")
    inference.device.value = "cpu"
    inference.run_button.native.click()
    qtbot.waitUntil(lambda: not inference.running, timeout=JOB_TIMEOUT_MS)
    assert inference.result is not None

    from src_train.evaluate.review_requests import false_positive_requests

    candidates = inference.result.candidates
    requests = false_positive_requests(
        uid,
        [c.center_xyz_mm for c in candidates],
        [c.diameter_mm for c in candidates],
        widget.series_view().annotations,
    )
    row = next(k for k, r in enumerate(requests) if r is not None)
    inference.table.selectRow(row)
    qtbot.mouseClick(inference.send_fp_button, Qt.MouseButton.LeftButton)
    assert panel.active and panel.items[panel.index].proposal
    assert panel.table_rows()[panel.index][1:3] == ["proposed", "to add?"]
    _press(qtbot, viewer, Qt.Key.Key_A)  # yes: a nodule the annotators missed
    added = _rows(root)[-1]
    assert added.status == "added"
    np.testing.assert_allclose(added.center_xyz_mm, candidates[row].center_xyz_mm, atol=1e-3)

    qtbot.mouseClick(inference.send_fn_button, Qt.MouseButton.LeftButton)
    flagged = [r for r in panel.table_rows() if r[2] == "check: missed by the model"]
    assert flagged and panel.items[panel.index].request.kind == "check"
    before = len(_rows(root))
    _press(qtbot, viewer, Qt.Key.Key_A)
    assert len(_rows(root)) == before + 1 and _rows(root)[-1].status == "accepted"


def test_the_sample_has_no_folder_to_save_reviews_in(viewer) -> None:
    viewer.open_sample(PLUGIN, "synthetic_chest_ct")
    panel = dock(viewer, "Mask QA").review
    assert "needs a series of a data folder" in panel.current.text()
    assert not panel.start_button.isEnabled() and not panel.accept_button.isEnabled()


def test_a_reviews_file_written_by_another_window_is_read_on_opening(
    make_napari_viewer, qtbot, data
) -> None:
    root, uid = data
    folder = LunaFolder(root)
    first = folder.nodules(uid)[0]
    folder_dir = reviews_dir(root)
    folder_dir.mkdir()
    x, y, z = first.center_xyz_mm
    with (folder_dir / REVIEWS_CSV).open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(REVIEW_COLUMNS)
        writer.writerow([uid, x, y, z, 6, "rejected", "", "Bob", "t", "other window"])
        writer.writerow([uid, x, y, z, 6, "bogus", "", "Bob", "t", ""])
    viewer = make_napari_viewer(show=True)
    _widget, panel = _open_review(viewer, qtbot, root, uid)
    assert panel.table_rows()[0][2:4] == ["rejected", "Bob"]
    expected = apply_book(ReviewBook.for_folder(folder), folder.load(uid), folder.nodules(uid))
    np.testing.assert_array_equal(
        layer_with_role(viewer, "reviewed").data.astype(bool), expected.mask
    )

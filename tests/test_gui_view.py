"""``lunaseg view PATH``: napari opens with the series, its masks and the widgets docked."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import layer_with_role

from src_train.luna import LunaFolder

pytestmark = pytest.mark.gui


@pytest.fixture
def view(make_napari_viewer, monkeypatch):  # type: ignore[no-untyped-def]
    """``lunaseg view ARGS`` as a user runs it: returns ``(exit code, the viewer or None)``."""
    import napari

    from src_train.cli import main

    viewers = []

    def viewer_factory(**kwargs):  # type: ignore[no-untyped-def]
        viewers.append(make_napari_viewer(**kwargs))
        return viewers[-1]

    monkeypatch.setattr(napari, "Viewer", viewer_factory)
    monkeypatch.setattr(napari, "run", lambda *a, **k: None)  # do not block

    def run(*args: str):  # type: ignore[no-untyped-def]
        code = main(["view", *args])
        return code, (viewers[-1] if viewers else None)

    return run


def _most_annotated(folder: Path) -> str:
    luna = LunaFolder(folder)
    counts = {uid: len(luna.nodules(uid)) for uid in luna.series_uids}
    return max(luna.series_uids, key=lambda uid: counts[uid])


def test_view_command_docks_widgets(make_napari_viewer, monkeypatch, tiny_synth_dir: Path) -> None:
    import napari

    from src_train.cli import main

    viewers = []

    def viewer_factory(**kwargs):
        viewers.append(make_napari_viewer(**kwargs))
        return viewers[-1]

    monkeypatch.setattr(napari, "Viewer", viewer_factory)
    monkeypatch.setattr(napari, "run", lambda *a, **k: None)  # do not block
    luna = LunaFolder(tiny_synth_dir)
    uid = next(u for u in luna.series_uids if luna.nodules(u))
    assert main(["view", str(luna.series_path(uid))]) == 0

    (viewer,) = viewers
    names = [layer.name for layer in viewer.layers]
    assert any(n.endswith(" mask") for n in names) and any(n.endswith(" nodules") for n in names)
    docked = " ".join(viewer.window.dock_widgets)
    for widget in ("Mask QA", "Inference", "Training"):
        assert widget in docked


def test_view_without_path_opens_the_series_with_most_nodules(tiny_synth_dir: Path) -> None:
    from napari_lunaseg._cli import default_series

    luna = LunaFolder(tiny_synth_dir)
    counts = {uid: len(luna.nodules(uid)) for uid in luna.series_uids}
    chosen = default_series(tiny_synth_dir, seed=0)
    assert counts[chosen.name.removesuffix(".mhd")] == max(counts.values())
    assert len(set(counts.values())) > 1, "fixture should hold series with different counts"


@pytest.mark.parametrize("where", ["data folder", "subset folder"])
def test_view_a_folder_opens_its_most_annotated_series(view, tiny_synth_dir: Path, where) -> None:
    path = tiny_synth_dir if where == "data folder" else tiny_synth_dir / "subset0"
    code, viewer = view(str(path))
    assert code == 0
    uid = _most_annotated(tiny_synth_dir)
    assert layer_with_role(viewer, "ct").metadata["lunaseg"]["series_uid"] == uid
    points = layer_with_role(viewer, "nodules")  # with the folder's annotations
    assert len(points.data) == len(LunaFolder(tiny_synth_dir).nodules(uid))


def test_view_a_folder_without_scans_is_one_line(view, tmp_path: Path, capsys) -> None:
    (tmp_path / "subset0").mkdir()
    for path in (tmp_path, tmp_path / "subset0", tmp_path / "absent"):
        code, viewer = view(str(path))
        captured = capsys.readouterr()
        assert code == 2 and viewer is None  # napari never started
        (line,) = captured.err.strip().splitlines()
        assert line.startswith(f"lunaseg view: error: {path} ") and "Traceback" not in line
        assert "LUNA16-layout folder" in line


def test_the_reader_opens_folders_by_the_same_rule(viewer, tiny_synth_dir: Path, tmp_path) -> None:
    from napari_lunaseg._reader import get_reader

    viewer.open(str(tiny_synth_dir / "subset0"), plugin="napari-lunaseg")  # File > Open Folder
    uid = _most_annotated(tiny_synth_dir)
    assert layer_with_role(viewer, "ct").metadata["lunaseg"]["series_uid"] == uid
    assert get_reader(str(tmp_path)) is None  # a folder without scans: napari may try others


def test_a_malformed_annotation_row_shows_the_scan_and_names_the_row(
    view, tiny_synth_dir: Path, tmp_path: Path
) -> None:
    from napari.utils.notifications import notification_manager

    data = tmp_path / "data"
    shutil.copytree(tiny_synth_dir, data)
    uid = _most_annotated(data)
    csv = data / "annotations.csv"
    lines = csv.read_text().splitlines()
    bad = next(i for i, line in enumerate(lines) if line.startswith(uid))
    lines[bad] = lines[bad].replace(",", ",abc", 2).replace(",abc", ",", 1)  # coordY = abc...
    csv.write_text("\n".join(lines) + "\n")
    before = len(notification_manager.records)
    code, viewer = view(str(data / "subset0" / f"{uid}.mhd"))
    assert code == 0
    shown = layer_with_role(viewer, "nodules")  # the scan, without the bad row only
    assert len(shown.data) == len(LunaFolder(tiny_synth_dir).nodules(uid)) - 1
    messages = [str(n.message) for n in notification_manager.records[before:]]
    (warning,) = [m for m in messages if "skipped" in m]
    headline = warning.splitlines()[0]  # what napari shows before the user expands it
    assert headline.startswith(f"annotations.csv line {bad + 1} skipped: coordY is")
    assert str(csv) in warning  # the full path, after the reason
    overlay = viewer.canvas.overlays.text  # and where it stays readable: on the canvas
    assert overlay.visible and f"line {bad + 1}" in overlay.text and str(csv) in overlay.text


def test_view_fills_the_screen_shows_the_whole_slice_and_counts_slices(
    view, tiny_synth_dir: Path, qtbot
) -> None:
    from qtpy.QtWidgets import QApplication

    from napari_lunaseg._mask_qa import MaskQAWidget
    from napari_lunaseg._viewer_utils import nodule_view_mm

    uid = _most_annotated(tiny_synth_dir)
    code, viewer = view(str(tiny_synth_dir / "subset0" / f"{uid}.mhd"))
    assert code == 0
    area = QApplication.primaryScreen().availableGeometry()  # at least (napari has a minimum)
    width, height = viewer.window.geometry()[2:]
    assert width >= area.width() and height >= area.height()
    ct = layer_with_role(viewer, "ct")
    n_slices = ct.data.shape[0]
    # the slider counts slices, as the tables do, under named axes
    assert viewer.dims.axis_labels == ("z", "y", "x")
    assert viewer.dims.nsteps[0] == n_slices
    qa = next(w for w in QApplication.allWidgets() if isinstance(w, MaskQAWidget))
    record = qa.state.records[0]
    index = int(record.center_irc[0])
    assert viewer.dims.current_step[0] == index  # the first nodule's slice
    assert f"slice {index} of 0-{n_slices - 1}" in viewer.canvas.overlays.text.text
    # the whole slice in view: its extent in mm times the zoom fits the canvas
    corners = np.array([ct.data_to_world(c) for c in [(0, 0, 0), (0, *ct.data.shape[1:])]])
    extent_mm = np.abs(corners[1, 1:] - corners[0, 1:])
    canvas = np.array(viewer.window._qt_viewer.canvas.size[::-1])  # (height, width) px
    assert np.all(extent_mm * viewer.scene.camera.zoom <= canvas * 1.01)
    # growth replay zooms on the nodule, from wherever the view was
    qa.replay.interval_ms = 5
    qa.replay.play_button.native.click()
    expected_zoom = min(canvas) / nodule_view_mm(record.nodule.diameter_mm)
    assert viewer.scene.camera.zoom == pytest.approx(expected_zoom, rel=0.05)
    qtbot.waitUntil(lambda: not qa.replay.playing, timeout=10_000)


def test_no_table_header_is_cut(viewer) -> None:
    from conftest import dock

    for name in ("Mask QA", "Inference", "Training"):
        table = dock(viewer, name).table
        header = table.horizontalHeader()
        for column in range(table.columnCount()):
            assert table.columnWidth(column) >= header.sectionSizeHint(column), (name, column)

"""``lunaseg view PATH``: napari opens with the series, its masks and the widgets docked."""

from __future__ import annotations

from pathlib import Path

import pytest

from src_train.luna import LunaFolder

pytestmark = pytest.mark.gui


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

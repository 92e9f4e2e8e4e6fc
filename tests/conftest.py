"""Shared fixtures. Each test module builds its own small volumes in ``tmp_path``."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")


#: Seed and size of the shared tiny synthetic data set (see ``tiny_synth_dir``).
TINY_SYNTH_SEED = 1234
TINY_SYNTH_SCANS = 4


@pytest.fixture
def torch_one_thread() -> Iterator[None]:
    """One intra-op torch thread for the test, restored after it.

    On a shared, busy CPU, OpenMP threads spin and waste time. Modules whose tests run torch
    ask for it with ``pytestmark = pytest.mark.usefixtures("torch_one_thread")``.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny synthetic LUNA16-layout data set, written once per test session.

    4 scans of 96-128 px in-plane and 32-48 slices (1.5-1.9 mm pixels, 2-2.5 mm slices), each
    with 2-4 nodules of 6-20 mm cycling through every kind; seed fixed. Layout as
    ``src_train.synth.write_dataset`` writes it: ``subset0/<uid>.mhd``, ``annotations.csv``,
    ``candidates.csv``, ``truth/<uid>.mhd``, ``truth/nodules.csv``. Treat it as read-only: it
    is shared by every test of the session (copy it to ``tmp_path`` to modify it).
    Open it with ``src_train.luna.LunaFolder(tiny_synth_dir)``.
    """
    from src_train.synth import SynthConfig, write_dataset

    out = tmp_path_factory.mktemp("tiny_synth") / "data"
    write_dataset(out, n_scans=TINY_SYNTH_SCANS, seed=TINY_SYNTH_SEED, config=SynthConfig.tiny())
    return out


#: The plugin's name in napari's plugin manager (npe2 manifest ``name``).
PLUGIN = "napari-lunaseg"


@pytest.fixture
def viewer(make_napari_viewer):  # type: ignore[no-untyped-def]
    """A shown napari viewer (screenshots and OpenGL need it shown, under Xvfb in CI)."""
    return make_napari_viewer(show=True)


def dock(viewer, name: str):  # type: ignore[no-untyped-def]
    """Open one of LunaSeg's widgets the way a user does (Plugins menu): through the manifest."""
    _dock_widget, widget = viewer.window.add_plugin_dock_widget(PLUGIN, name)
    return widget


def layer_with_role(viewer, role: str):  # type: ignore[no-untyped-def]
    """The (first) LunaSeg layer with this role, or None."""
    from napari_lunaseg._layers import layer_info

    return next((ly for ly in viewer.layers if layer_info(ly).get("role") == role), None)


def first_annotated_series(folder: Path) -> Path:
    """The first series of a LUNA16-layout folder that has annotated nodules."""
    from src_train.luna import LunaFolder

    luna = LunaFolder(folder)
    return luna.series_path(next(u for u in luna.series_uids if luna.nodules(u)))


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One training cache per test module (``tiny_synth_dir`` itself is read-only)."""
    return tmp_path_factory.mktemp("cache")

"""``lunaseg view``: the one subcommand that needs napari.

It lives on the viewer side and reaches the ``lunaseg`` parser through the ``lunaseg.commands``
entry point (see ``pyproject.toml``), so ``src_train`` never imports napari or Qt. napari itself
is imported only when the command runs, so ``lunaseg --help`` stays fast.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from src_train import DEFAULT_DATA_DIR
from src_train.ct import SERIES_SUFFIXES
from src_train.errors import LunaSegError

#: Scans in the synthetic data set ``lunaseg view`` writes when given no PATH.
VIEW_SYNTH_SCANS = 4

#: Environment variables through which Qt finds a display (or is told to need none).
DISPLAY_VARIABLES = ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")


def add_view_command(sub: argparse._SubParsersAction) -> None:
    """Register ``lunaseg view [PATH] [--seed S] [--data-dir DIR]``."""
    p = sub.add_parser(
        "view",
        help="open napari with the LunaSeg plugin (a synthetic scan when no PATH is given)",
    )
    p.add_argument(
        "path",
        nargs="?",
        help="a CT series (.mhd, .nii, .nii.gz, .nrrd or a DICOM folder); default: the "
        f"synthetic series with the most nodules in {DEFAULT_DATA_DIR}/ (written there if "
        "missing)",
    )
    p.add_argument(
        "--seed", type=int, default=0, help="seed of the synthetic data set (default: 0)"
    )
    p.add_argument(
        "--data-dir",
        default=DEFAULT_DATA_DIR,
        help=f"where the synthetic data set is written/reused (default: {DEFAULT_DATA_DIR})",
    )
    p.set_defaults(func=run_view)


def default_series(data_dir: Path, seed: int) -> Path:
    """The series with the most nodules in ``data_dir`` (a synthetic data set is made if absent).

    Ties go to the first series in UID order, so the choice is stable for a seed.
    """
    from src_train.luna import LunaFolder
    from src_train.synth import write_dataset

    if (data_dir / "annotations.csv").is_file():
        folder = LunaFolder(data_dir)
    else:
        print(f"writing a synthetic data set ({VIEW_SYNTH_SCANS} scans, seed {seed}) to {data_dir}")
        folder = write_dataset(data_dir, n_scans=VIEW_SYNTH_SCANS, seed=seed)
    counts = {uid: len(folder.nodules(uid)) for uid in folder.series_uids}
    best = max(counts, key=lambda uid: counts[uid], default=None)
    if best is not None and counts[best] > 0:
        return folder.series_path(best)
    raise LunaSegError(
        f"{data_dir} holds no series with annotated nodules; remove it or pass a PATH."
    )


def check_display() -> None:
    """:class:`LunaSegError` on Linux when Qt would find no display (it would abort the process
    with a core dump instead of an error)."""
    if not sys.platform.startswith("linux"):
        return
    if any(os.environ.get(name) for name in DISPLAY_VARIABLES):
        return
    raise LunaSegError(
        "No display: neither DISPLAY nor WAYLAND_DISPLAY is set, so napari cannot open a "
        "window. Run it under a virtual display (xvfb-run -a lunaseg view ...), log in with X "
        "forwarding (ssh -X), or use the headless commands (lunaseg mask, mask-report, infer, "
        "eval)."
    )


def run_view(args: argparse.Namespace) -> int:
    """Open napari with the series (or the synthetic default) and the widgets docked; block."""
    check_display()
    path = Path(args.path) if args.path else default_series(Path(args.data_dir), args.seed)
    if not path.exists():
        raise LunaSegError(f"{path} does not exist; give a CT series file or a DICOM folder.")
    if path.is_file() and not path.name.lower().endswith(SERIES_SUFFIXES):
        raise LunaSegError(
            f"{path.name}: unsupported file type; 'lunaseg view' opens "
            f"{', '.join(SERIES_SUFFIXES)} files and DICOM folders."
        )
    import napari

    from napari_lunaseg._launch import open_viewer

    open_viewer(path)
    napari.run()
    return 0

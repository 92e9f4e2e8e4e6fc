"""``lunaseg view``: the one subcommand that needs napari.

It lives on the viewer side and reaches the ``lunaseg`` parser through the ``lunaseg.commands``
entry point (see ``pyproject.toml``), so ``src_train`` never imports napari or Qt. napari itself
is imported only when the command runs, so ``lunaseg --help`` stays fast.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from src_train import DEFAULT_DATA_DIR
from src_train.errors import LunaSegError
from src_train.synth import DEFAULT_SEED

log = logging.getLogger(__name__)

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
        help="a CT series (.mhd, .nii, .nii.gz, .nrrd or a DICOM folder), or a LUNA16-layout "
        "folder or subset folder (its series with the most annotated nodules opens); default: "
        f"{DEFAULT_DATA_DIR}/, the synthetic data set 'lunaseg synth' writes (written there "
        "if missing)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=DEFAULT_SEED,
        help=f"seed of the synthetic data set (default: {DEFAULT_SEED})",
    )
    p.add_argument(
        "--data-dir",
        default=DEFAULT_DATA_DIR,
        help=f"where the synthetic data set is written/reused (default: {DEFAULT_DATA_DIR})",
    )
    p.set_defaults(func=run_view)


def default_series(data_dir: Path, seed: int) -> Path:
    """The series ``lunaseg view`` opens without a PATH: the one with the most nodules in
    ``data_dir`` (:func:`~src_train.luna.series_to_open`).

    Without a data set there, it first writes the one ``lunaseg synth DATA_DIR --seed SEED``
    writes (same scans, seed and settings), so the README's next command finds it done.
    """
    from src_train.luna import series_to_open
    from src_train.luna.layout import has_annotations
    from src_train.synth import DEFAULT_SCANS, write_dataset

    if not has_annotations(data_dir):
        log.info(
            "writing a synthetic data set (%d scans, seed %d) to %s", DEFAULT_SCANS, seed, data_dir
        )
        write_dataset(data_dir, DEFAULT_SCANS, seed)  # logs a line per scan
    return series_to_open(data_dir)


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


def view_target(path: str | os.PathLike[str]) -> Path:
    """What ``lunaseg view PATH`` opens: a 2-D image set (images and masks paired by name, PH2
    layout) as it is, since the plugin's reader shows it as an image stack with its masks;
    otherwise the series :func:`~src_train.luna.series_to_open` picks (a series, or a
    folder's most-annotated one)."""
    from src_train.images2d.folder import looks_like_image_set
    from src_train.luna import series_to_open

    if looks_like_image_set(path):
        return Path(path)
    return series_to_open(path)


def run_view(args: argparse.Namespace) -> int:
    """Open napari with the series, image set (or the synthetic default) and the widgets
    docked; block."""
    check_display()
    given = args.path
    path = view_target(given) if given else default_series(Path(args.data_dir), args.seed)
    import napari

    from napari_lunaseg._launch import open_viewer

    open_viewer(path)
    napari.run()
    return 0

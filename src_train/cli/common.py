"""Pieces the subcommands share: the data-folder argument and the threshold option."""

from __future__ import annotations

import argparse

from src_train import DEFAULT_DATA_DIR


def add_data_dir(p: argparse.ArgumentParser, *, help_text: str = "LUNA16-layout folder") -> None:
    """An optional positional ``DATA_DIR`` defaulting to the synthetic data set's folder."""
    p.add_argument(
        "data_dir",
        nargs="?",
        default=DEFAULT_DATA_DIR,
        metavar="DATA_DIR",
        help=f"{help_text} (default: {DEFAULT_DATA_DIR})",
    )

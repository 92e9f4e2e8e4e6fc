"""Pieces the subcommands share: the data-folder argument and the check of the reviews."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping

from src_train import DEFAULT_DATA_DIR
from src_train.errors import AnnotationError


def add_data_dir(p: argparse.ArgumentParser, *, help_text: str = "LUNA16-layout folder") -> None:
    """An optional positional ``DATA_DIR`` defaulting to the synthetic data set's folder."""
    p.add_argument(
        "data_dir",
        nargs="?",
        default=DEFAULT_DATA_DIR,
        metavar="DATA_DIR",
        help=f"{help_text} (default: {DEFAULT_DATA_DIR})",
    )


def refuse_bad_reviews(data_dir: str | os.PathLike[str]) -> None:
    """Stop a command (:class:`AnnotationError`: one line, exit 2) when ``DATA/reviews/
    reviews.csv`` has a row that cannot be read (an unknown status, a coordinate that is not a
    number...), naming its file and line, as a bad ``annotations.csv`` row does.

    The viewer reads such a file leniently and says what it skipped; a command-line job must
    not train, mask or score on a review read in part.
    """
    from src_train.reviews import REVIEWS_CSV, read_reviews, reviews_dir

    read = read_reviews(reviews_dir(data_dir) / REVIEWS_CSV)
    if not read.problems:
        return
    first = read.problems[0].split("; row skipped")[0]
    more = len(read.problems) - 1
    others = f" ({more} more bad row(s) after it)" if more else ""
    raise AnnotationError(
        f"{first}{others}. Fix or delete the row and run the command again (the viewer skips "
        "such rows; a command stops so nothing is made from a review read in part)."
    )


#: Exit status of a folder command (mask, cache, infer) some of whose series failed while the
#: others were done (2 is a user error found before any work).
EXIT_SERIES_FAILED = 1


def report_failures(command: str, failures: Mapping[str, str], fix: str) -> int:
    """Print each failed series (``uid: reason``) and a last line saying what to do, to
    stderr; return :data:`EXIT_SERIES_FAILED`, or 0 when nothing failed. The one behaviour of
    every folder command: do the rest, list the failures, exit non-zero."""
    if not failures:
        return 0
    for uid, reason in failures.items():
        print(f"lunaseg {command}: failed: {uid}: {reason}", file=sys.stderr)
    print(
        f"lunaseg {command}: {len(failures)} series failed (the others are done); {fix}",
        file=sys.stderr,
    )
    return EXIT_SERIES_FAILED

"""``lunaseg``: the command-line face of the headless core.

Thin by design: parse options, call ``src_train``, print results. Every subcommand has a pair of
functions below, ``_add_<name>(subparsers)`` and ``_run_<name>(args) -> int``. Errors that a user
can fix (:class:`LunaSegError`) are printed as one line, without a traceback, and exit with 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from src_train import __version__
from src_train.errors import LunaSegError

log = logging.getLogger("lunaseg")

#: Default folder for the synthetic data set when a command is given none.
DEFAULT_DATA_DIR = "lunaseg-data"


# ---------------------------------------------------------------------------------------------
# synth / mask / mask-report  (data and ground truth)
# ---------------------------------------------------------------------------------------------
def _add_synth(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synth", help="write a synthetic chest-CT data set in LUNA16 layout")
    p.set_defaults(func=_run_synth)


def _run_synth(args: argparse.Namespace) -> int:
    raise LunaSegError("'lunaseg synth' is not available yet.")


def _add_mask(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("mask", help="generate voxel masks from point annotations")
    p.set_defaults(func=_run_mask)


def _run_mask(args: argparse.Namespace) -> int:
    raise LunaSegError("'lunaseg mask' is not available yet.")


def _add_mask_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("mask-report", help="compare mask methods against true shapes")
    p.set_defaults(func=_run_mask_report)


def _run_mask_report(args: argparse.Namespace) -> int:
    raise LunaSegError("'lunaseg mask-report' is not available yet.")


# ---------------------------------------------------------------------------------------------
# cache / train  (training)
# ---------------------------------------------------------------------------------------------
def _add_cache(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cache", help="prepare a data folder for training (memory-mapped arrays)")
    p.set_defaults(func=_run_cache)


def _run_cache(args: argparse.Namespace) -> int:
    raise LunaSegError("'lunaseg cache' is not available yet.")


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a segmentation model")
    p.set_defaults(func=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    raise LunaSegError("'lunaseg train' is not available yet.")


# ---------------------------------------------------------------------------------------------
# infer / eval  (inference and evaluation)
# ---------------------------------------------------------------------------------------------
def _add_infer(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("infer", help="segment series with a trained model")
    p.set_defaults(func=_run_infer)


def _run_infer(args: argparse.Namespace) -> int:
    raise LunaSegError("'lunaseg infer' is not available yet.")


def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="score candidates the LUNA16 way (FROC, CPM)")
    p.set_defaults(func=_run_eval)


def _run_eval(args: argparse.Namespace) -> int:
    raise LunaSegError("'lunaseg eval' is not available yet.")


# ---------------------------------------------------------------------------------------------
# view  (napari)
# ---------------------------------------------------------------------------------------------
def _add_view(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("view", help="open napari with the LunaSeg plugin")
    p.set_defaults(func=_run_view)


def _run_view(args: argparse.Namespace) -> int:
    raise LunaSegError("'lunaseg view' is not available yet.")


# ---------------------------------------------------------------------------------------------
_SUBCOMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (
    _add_synth,
    _add_mask,
    _add_mask_report,
    _add_cache,
    _add_train,
    _add_infer,
    _add_eval,
    _add_view,
)


def build_parser() -> argparse.ArgumentParser:
    """The ``lunaseg`` argument parser with all subcommands."""
    parser = argparse.ArgumentParser(
        prog="lunaseg",
        description="Lung-nodule segmentation for chest CT (LUNA16 layout or synthetic data).",
    )
    parser.add_argument("--version", action="version", version=f"lunaseg {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in _SUBCOMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``lunaseg`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        return int(args.func(args) or 0)
    except LunaSegError as exc:
        print(f"lunaseg {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"lunaseg {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

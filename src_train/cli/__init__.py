"""``lunaseg``: the command-line face of the headless core.

Thin by design: parse options, call ``src_train``, print results. Each subcommand has a pair of
functions, ``add_<name>(subparsers)`` and ``run_<name>(args) -> int``, in the module of its
area: :mod:`.data` (synth, mask, mask-report, review), :mod:`.training` (cache, train),
:mod:`.inference` (infer, eval). Options of ``train`` and ``infer`` are generated from their
dataclasses (:mod:`src_train.options`). Errors a user can fix (:class:`LunaSegError`) are
printed as one line, without a traceback, and exit with 2; ``lunaseg --debug COMMAND`` shows
their traceback instead.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from src_train import __version__
from src_train.cli.data import add_mask, add_mask_report, add_review, add_synth
from src_train.cli.images2d import add_compare, add_synth2d
from src_train.cli.inference import add_eval, add_infer
from src_train.cli.qa import add_qa
from src_train.cli.training import add_cache, add_train
from src_train.errors import LunaSegError

log = logging.getLogger("lunaseg")

_SUBCOMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (
    add_synth,
    add_mask,
    add_mask_report,
    add_review,
    add_qa,
    add_cache,
    add_train,
    add_infer,
    add_eval,
    add_synth2d,
    add_compare,
)

#: What an interrupted command leaves, and how to go on (appended to "interrupted").
RESUME_HINTS = {
    "infer": "; complete series are kept: run the same command again to resume",
    "cache": "; entries already built are kept: run the same command again to resume",
    "train": "; the last complete epoch's checkpoint is kept: add --resume to go on",
    "compare": "; finished runs are kept: add --resume to go on",
    "mask": "; nothing was written (the output folder appears whole or not at all)",
}

#: Entry-point group through which other packages add ``lunaseg`` subcommands. The napari
#: plugin adds ``view`` this way, so this headless package never imports napari or Qt.
PLUGIN_COMMANDS_GROUP = "lunaseg.commands"


def _plugin_subcommands() -> list[Callable[[argparse._SubParsersAction], None]]:
    """Subcommand adders registered by installed packages (``lunaseg.commands`` entry points).

    A plugin that fails to load is logged and skipped: the headless commands keep working on a
    machine whose GUI stack is broken.
    """
    from importlib.metadata import entry_points

    adders = []
    for entry in sorted(entry_points(group=PLUGIN_COMMANDS_GROUP), key=lambda e: e.name):
        try:
            adders.append(entry.load())
        except Exception as exc:  # any import failure of a third-party plugin
            log.warning(
                "lunaseg: skipping the %r command (%s: %s)", entry.name, type(exc).__name__, exc
            )
    return adders


def build_parser() -> argparse.ArgumentParser:
    """The ``lunaseg`` argument parser with all subcommands."""
    parser = argparse.ArgumentParser(
        prog="lunaseg",
        description="Lung-nodule segmentation for chest CT (LUNA16 layout or synthetic data).",
    )
    parser.add_argument("--version", action="version", version=f"lunaseg {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    parser.add_argument(
        "--debug",
        action="store_true",
        help="show the full traceback of an error (without it: one line, exit status 2)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in (*_SUBCOMMANDS, *_plugin_subcommands()):
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``lunaseg`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    # Consumed here so that subcommands see only their own options (train turns them into a
    # TrainConfig).
    debug = vars(args).pop("debug")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        return int(args.func(args) or 0)
    except LunaSegError as exc:
        if debug:
            raise
        print(f"lunaseg {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        again = RESUME_HINTS.get(args.command, "")
        print(f"lunaseg {args.command}: interrupted{again}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

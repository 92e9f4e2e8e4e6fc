"""``lunaseg synth2d`` and ``lunaseg compare``: 2-D image sets and the model x loss comparison.

Both commands are generated from their dataclasses (:class:`~src_train.images2d.synth.
Synth2dOptions`, :class:`~src_train.images2d.options.CompareOptions`). ``compare`` prints one
line per run and epoch; SIGINT (Ctrl-C) or SIGTERM stops it cleanly after the current batch,
and ``--resume`` continues it; a second Ctrl-C interrupts at once.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from typing import Any, TextIO

from src_train.cli.estimate import EpochClock

#: Exit status of a command stopped on request (128 + SIGINT, as shells report it).
EXIT_STOPPED = 130

#: ``synth2d`` prints a progress line every this fraction of the images (and the last).
SYNTH_PROGRESS_FRACTION = 0.1


class StopFlag:
    """A stop request that signal handlers set and long work polls (thread-safe)."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def request_stop(self) -> None:
        """Ask the work to stop at its next check."""
        self._event.set()

    @property
    def stop_requested(self) -> bool:
        """True once a stop was requested."""
        return self._event.is_set()

    def __call__(self) -> bool:
        return self._event.is_set()


def add_synth2d(sub: argparse._SubParsersAction) -> None:
    """``lunaseg synth2d``: one option per :class:`Synth2dOptions` field."""
    from src_train.images2d.synth import Synth2dOptions
    from src_train.options import add_options

    p = sub.add_parser(
        "synth2d",
        help="write a synthetic 2-D image set (dermoscopy-like images with true masks)",
        description="Write RGB images of skin with one pigmented lesion each (irregular "
        "outline, hairs, uneven light, vignetting, noise) and the lesion's true mask, in PH2's "
        "folder layout or flat (images/, masks/). 'lunaseg compare OUT_DIR' reads it.",
    )
    p.add_argument("out_dir", metavar="OUT_DIR", help="folder to write")
    add_options(p, Synth2dOptions, skip=("out_dir",))
    p.set_defaults(func=run_synth2d)


def run_synth2d(args: argparse.Namespace) -> int:
    """Write the set, printing progress; Ctrl-C stops between images."""
    from src_train.errors import CancelledError
    from src_train.images2d.synth import Synth2dOptions, write_image_set
    from src_train.options import options_from_args
    from src_train.train import install_stop_signals

    options = options_from_args(Synth2dOptions, args, out_dir=args.out_dir)
    every = max(1, round(options.images * SYNTH_PROGRESS_FRACTION))

    def progress(done: int, total: int, message: str) -> None:
        if done % every == 0 or done == total:
            print(message, flush=True)

    stop = StopFlag()
    restore = install_stop_signals(stop)
    try:
        paired = write_image_set(
            options.out_dir,
            options.images,
            seed=options.seed,
            config=options.config(),
            layout=options.layout,
            progress=progress,
            overwrite=options.overwrite,
            should_stop=stop,
        )
    except CancelledError as exc:
        print(f"{exc} Write it again with --overwrite.", file=sys.stderr)
        return EXIT_STOPPED
    finally:
        restore()
    print(f"wrote {len(paired.pairs)} images with masks ({paired.layout} layout) to {paired.root}")
    print(f"next: lunaseg compare {paired.root} --out <OUT>")
    return 0


def add_compare(sub: argparse._SubParsersAction) -> None:
    """``lunaseg compare``: one option per :class:`CompareOptions` field."""
    from src_train.images2d.options import CompareOptions
    from src_train.options import add_options

    p = sub.add_parser(
        "compare",
        help="train every model x loss on one data set and write a comparison report",
        description="Train every combination of --models and --losses with the same seed, "
        "split and budget, and write OUT/results.csv, OUT/runs.csv and OUT/report.md with "
        "figures; the run folders stay in OUT/runs/. On a 2-D image folder (PH2 layout, or "
        "images and masks paired by name) each run is scored on the test images with its best "
        "validation checkpoint. On a LUNA16 folder each run trains as 'lunaseg train' does and "
        "is ranked by its validation Dice on whole slices. Ctrl-C stops after the current "
        "batch; --resume continues.",
        epilog="Models: unet, segnet, unet-bilinear, unet:8 (8 filters), segnet:32 ... "
        "Example: lunaseg compare PH2Dataset --models unet,segnet --losses bce,dice,focal "
        "--epochs 120 --size 256 --out ph2_compare",
    )
    p.add_argument("data", metavar="DATA", help="image folder, or a LUNA16-layout CT folder")
    add_options(p, CompareOptions, skip=("data",))
    p.add_argument(
        "--progress-json",
        action="store_true",
        help="print one JSON object per event to stdout (training events as 'lunaseg train' "
        "prints them); the progress lines go to stderr",
    )
    p.set_defaults(func=run_compare)


def _printer(out: TextIO, as_json: bool, clock: EpochClock) -> Any:
    """The comparison callback: progress lines (and JSON events) as they come, and the time
    estimate after the first timed epoch."""
    from src_train.images2d.compare import CompareEvent

    def line(text: str) -> None:
        print(text, file=out, flush=True)

    def on_event(event: CompareEvent) -> None:
        step = f"[{event.run_index}/{event.runs}]"
        if event.kind == "train" and event.train is not None:
            estimate = clock.estimate(event.train, runs_after=event.runs - event.run_index)
            if estimate:
                line(f"{estimate} (--epochs, --size and fewer --models/--losses shorten it)")
        if as_json:
            if event.kind == "train" and event.train is not None:
                print(event.train.to_json(), flush=True)
            else:
                print(json.dumps(event.to_dict(), separators=(",", ":")), flush=True)
        if event.kind == "load" and event.done == event.total:
            line(f"read {event.total} image/mask pairs")
        elif event.kind in ("run", "skip", "scored", "stopped"):
            line(f"{step} {event.message}" if event.runs else event.message)
        elif event.kind == "train" and event.train is not None and event.train.kind == "epoch":
            line(f"{step} {event.run} {_epoch_text(event.train.epoch, event.train.metrics)}")

    return on_event


def _epoch_text(epoch: int, metrics: dict[str, float]) -> str:
    """``epoch 3: train loss 0.3120, val IoU 0.712 (12.3 s)`` from an epoch's row."""
    parts = [f"epoch {epoch}: train loss {metrics.get('train/loss', float('nan')):.4f}"]
    for key, name in (("val/iou", "val IoU"), ("val/f1", "val Dice")):
        if key in metrics:
            parts.append(f"{name} {metrics[key]:.3f}")
    text = ", ".join(parts)
    return text + (f" ({metrics['seconds']:.1f} s)" if "seconds" in metrics else "")


def run_compare(args: argparse.Namespace) -> int:
    """Run (or resume) the comparison; print progress, the ranking and the report's path."""
    from src_train.images2d.compare import run_comparison
    from src_train.images2d.options import CompareOptions
    from src_train.luna import is_luna_folder
    from src_train.options import options_from_args
    from src_train.train import TrainConfig, install_stop_signals

    options = options_from_args(CompareOptions, args, data=args.data)
    out = sys.stderr if args.progress_json else sys.stdout
    if is_luna_folder(options.data):  # validated as lunaseg train validates
        every = TrainConfig().val_every
        clock = EpochClock(lambda e: e == 1 or e % every == 0 or e == options.epochs)
    else:  # a 2-D run validates after every epoch
        clock = EpochClock(lambda e: True)
    stop = StopFlag()
    restore = install_stop_signals(stop)
    try:
        result = run_comparison(
            options,
            callbacks=[_printer(out, args.progress_json, clock)],
            should_stop=stop,
            command_line=["lunaseg", *sys.argv[1:]],
        )
    finally:
        restore()
    if result.stopped:
        print(
            f"stopped: {len(result.records)} run(s) finished; continue with the same command "
            "and --resume",
            file=out,
        )
        return EXIT_STOPPED
    print(f"ranking by {result.metric}:", file=out)
    for rank, (label, value) in enumerate(result.ranking, start=1):
        tie = " (tie)" if result.tied > 1 and rank <= result.tied else ""
        print(f"  {rank}. {label}: {value:.3f}{tie}", file=out)
    if result.tied > 1:
        print(
            f"ranks 1-{result.tied} are a tie: their gaps are within the run-to-run noise "
            "(report.md says how it was measured)",
            file=out,
        )
    print(f"report: {result.files['report']}", file=out)
    return 0

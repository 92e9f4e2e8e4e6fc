"""``lunaseg cache`` and ``lunaseg train``; their options are TrainConfig's fields."""

from __future__ import annotations

import argparse
import os
import sys

from src_train.cli.common import add_data_dir, refuse_bad_reviews, report_failures
from src_train.cli.estimate import EpochClock


def add_cache(sub: argparse._SubParsersAction) -> None:
    """``lunaseg cache``."""
    from src_train.cache import default_workers
    from src_train.options import add_options
    from src_train.train import TrainConfig

    p = sub.add_parser(
        "cache",
        help="prepare a data folder for training (memory-mapped arrays)",
        description="Write per-series int16 CT and bit-packed mask arrays (+ meta.json) that "
        "training reads by crop, in parallel worker processes. Up-to-date entries are kept; "
        "stale ones are rebuilt, so a killed build resumes where it stopped. The free disk "
        "space is checked first against an estimate from the series headers: 2 bytes per "
        "voxel for the CT and one bit for the mask (about 1.06 x the unpacked .raw files).",
    )
    add_data_dir(p)
    add_options(p, TrainConfig, only=("cache_dir", "threshold_hu", "mask_method"))
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help=f"series built at once, each in its own process (default: {default_workers()}, "
        "one per CPU up to 8; each holds one series in memory)",
    )
    p.set_defaults(func=run_cache)


def run_cache(args: argparse.Namespace) -> int:
    """Build (or refresh) the training cache of a data folder."""
    from src_train.cache import SeriesCache, check_training_folder, default_workers
    from src_train.errors import ConfigError, SeriesFailedError
    from src_train.infer.events import RateMeter, format_seconds
    from src_train.options import options_from_args
    from src_train.train import TrainConfig

    workers = default_workers() if args.workers is None else int(args.workers)
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1; got {workers}.")
    config = options_from_args(TrainConfig, args, data_dir=args.data_dir)
    refuse_bad_reviews(config.data_dir)
    cache = SeriesCache(
        config.data_dir,
        config.cache_dir,
        threshold_hu=config.threshold_hu,
        mask_method=config.mask_method,
    )
    check_training_folder(cache.folder)
    uids = cache.series_uids
    needed, free, todo = cache.check_disk_space(uids)
    print(
        f"{cache.cache_dir}: {len(todo)} of {len(uids)} series to build with {workers} "
        f"worker(s), about {needed / 2**30:.2f} GiB needed, {free / 2**30:.1f} GiB free",
        flush=True,
    )
    meter = RateMeter(total=len(todo), done=0)

    def progress(done: int, total: int, uid: str) -> None:
        if done > total - len(todo):  # a series built now (not one found cached)
            meter.series_done()
        print(
            f"[{done}/{total}] {uid} ({meter.series_per_minute:.1f} series/min, "
            f"ETA {format_seconds(meter.eta_s)})",
            flush=True,
        )

    try:
        metas = cache.build_all(uids, progress=progress, workers=workers)
    except SeriesFailedError as exc:  # the others are cached
        again = f"run 'lunaseg cache {args.data_dir}' again (only they are rebuilt)"
        return report_failures("cache", exc.failures, f"fix them and {again}")
    total_bytes = sum(
        f.stat().st_size for m in metas for f in cache.series_dir(m.series_uid).iterdir()
    )
    nodules = sum(len(m.nodule_centers_irc) for m in metas)
    print(
        f"{len(metas)} series cached in {cache.cache_dir} ({total_bytes / 2**20:.1f} MiB, "
        f"{nodules} nodules, mask {cache.mask_method} at {cache.threshold_hu:g} HU)"
    )
    return 0


def add_train(sub: argparse._SubParsersAction) -> None:
    """``lunaseg train``: one option per :class:`~src_train.train.TrainConfig` field."""
    from src_train.options import add_options
    from src_train.train import TrainConfig
    from src_train.train.config import DEMO_RECIPE, REFERENCE_RECIPE, recipe_flags

    p = sub.add_parser(
        "train",
        help="train a segmentation model",
        description="Train the 2-D U-Net (or SegNet) on nodule crops of a LUNA16-layout "
        "folder; the run folder gets config.json, train.log, metrics.jsonl, checkpoints and "
        "TensorBoard logs. SIGINT/SIGTERM stop cleanly after the current batch (checkpoint "
        "saved; exit status 130/143, as for any interrupted command). Multi-GPU: torchrun "
        "--nproc_per_node N -m src_train.cli train DATA_DIR ...",
        epilog="The defaults are the recipe the shipped demo detector was trained with "
        f"(docs/demo_checkpoint.md): {recipe_flags(DEMO_RECIPE)}. The reference chapter's "
        f"recipe (the SPEC's) was {recipe_flags(REFERENCE_RECIPE)}: it marks much of the "
        "body; pass those flags to reproduce it. The run's config.json records every value "
        "used.",
    )
    add_data_dir(p)
    add_options(p, TrainConfig)
    p.add_argument(
        "--progress-json",
        action="store_true",
        help="print one JSON object per event (batch, validation, epoch, checkpoint, end) "
        "to stdout; logs go to stderr",
    )
    p.set_defaults(func=run_train)


#: A command stopped by signal N exits with this + N (the shells' convention).
SIGNAL_EXIT_BASE = 128


def run_train(args: argparse.Namespace) -> int:
    """Train; SIGINT/SIGTERM stop after the current batch with a checkpoint saved, then the exit
    status is 128 + the signal (130, 143); a finished run exits 0."""
    from src_train.options import options_from_args
    from src_train.train import ProgressEvent, TrainConfig, Trainer, install_stop_signals

    config = options_from_args(TrainConfig, args, data_dir=args.data_dir)
    refuse_bad_reviews(config.data_dir)
    callbacks = []
    if args.progress_json:

        def print_json(event: ProgressEvent) -> None:
            print(event.to_json(), flush=True)

        callbacks.append(print_json)
    clock = EpochClock(lambda e: e == 1 or e % config.val_every == 0 or e == config.epochs)

    def print_estimate(event: ProgressEvent) -> None:
        line = clock.estimate(event)
        if line and int(os.environ.get("RANK", "0")) == 0:
            extra = " (+ the second stage after the last epoch)" if config.ranker != "none" else ""
            print(line + extra, file=sys.stderr if args.progress_json else sys.stdout, flush=True)

    callbacks.append(print_estimate)
    trainer = Trainer(config, callbacks=callbacks, command_line=["lunaseg", *sys.argv[1:]])
    signals: list[int] = []
    restore = install_stop_signals(trainer, on_signal=signals.append)
    try:
        result = trainer.fit()
    finally:
        restore()
    # Stopped by a signal: the checkpoint is saved; exit as shells expect of an interrupted
    # command (128 + signal: 130 for Ctrl-C, 143 for SIGTERM), so scripts can tell it apart.
    code = SIGNAL_EXIT_BASE + signals[0] if result.stopped and signals else 0
    if int(os.environ.get("RANK", "0")) != 0:
        return code
    out = sys.stderr if args.progress_json else sys.stdout
    state = "stopped on request" if result.stopped else "done"
    print(
        f"{state}: epoch {result.epoch}/{config.epochs}, {result.samples_seen} samples, "
        f"run folder {result.run_dir}",
        file=out,
    )
    if result.best_epoch is not None:
        best = result.best_metrics
        print(
            f"best on the selection set (epoch {result.best_epoch}): nodule recall "
            f"{best['nodule_recall']:.3f}, {best['fp_per_scan']:.1f} FP/scan, CPM "
            f"{best['cpm']:.3f}; voxel precision {best['voxel_precision']:.3f}, recall "
            f"{best['voxel_recall']:.3f}",
            file=out,
        )
        if result.ranked_metrics:
            ranked = result.ranked_metrics
            print(
                f"re-ranked by --ranker {config.ranker}: nodule recall "
                f"{ranked['nodule_recall']:.3f}, {ranked['fp_per_scan']:.1f} FP/scan, CPM "
                f"{ranked['cpm']:.3f}",
                file=out,
            )
    else:
        held = "no checkpoint_best.pt" if result.stopped else "checkpoint_best.pt = last epoch"
        print(
            f"{held}: no validated epoch reached voxel precision "
            f"{config.best_min_precision:g} (--best-min-precision)",
            file=out,
        )
    return code

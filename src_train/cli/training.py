"""``lunaseg cache`` and ``lunaseg train``; their options are TrainConfig's fields."""

from __future__ import annotations

import argparse
import os
import sys

from src_train.cli.common import add_data_dir


def add_cache(sub: argparse._SubParsersAction) -> None:
    """``lunaseg cache``."""
    from src_train.options import add_options
    from src_train.train import TrainConfig

    p = sub.add_parser(
        "cache",
        help="prepare a data folder for training (memory-mapped arrays)",
        description="Write per-series int16 CT and uint8 mask arrays (+ meta.json) that "
        "training reads by crop. Up-to-date entries are kept; stale ones are rebuilt. "
        "Costs 3 bytes per voxel (about 1.5 x the unpacked .raw files).",
    )
    add_data_dir(p)
    add_options(p, TrainConfig, only=("cache_dir", "threshold_hu", "mask_method"))
    p.set_defaults(func=run_cache)


def run_cache(args: argparse.Namespace) -> int:
    """Build (or refresh) the training cache of a data folder."""
    from src_train.cache import SeriesCache, check_training_folder
    from src_train.options import options_from_args
    from src_train.train import TrainConfig

    config = options_from_args(TrainConfig, args, data_dir=args.data_dir)
    cache = SeriesCache(
        config.data_dir,
        config.cache_dir,
        threshold_hu=config.threshold_hu,
        mask_method=config.mask_method,
    )
    check_training_folder(cache.folder)

    def progress(done: int, total: int, uid: str) -> None:
        print(f"[{done}/{total}] {uid}", flush=True)

    metas = cache.build_all(progress=progress)
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

    p = sub.add_parser(
        "train",
        help="train a segmentation model",
        description="Train the 2-D U-Net (or SegNet) on nodule crops of a LUNA16-layout "
        "folder; the run folder gets config.json, train.log, metrics.jsonl, checkpoints and "
        "TensorBoard logs. SIGINT/SIGTERM stop cleanly after the current batch (checkpoint "
        "saved). Multi-GPU: torchrun --nproc_per_node N -m src_train.train DATA_DIR ...",
        epilog="The run's config.json records every value used.",
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


def run_train(args: argparse.Namespace) -> int:
    """Train; SIGINT/SIGTERM stop after the current batch with a checkpoint saved."""
    from src_train.options import options_from_args
    from src_train.train import ProgressEvent, TrainConfig, Trainer, install_stop_signals

    config = options_from_args(TrainConfig, args, data_dir=args.data_dir)
    callbacks = []
    if args.progress_json:

        def print_json(event: ProgressEvent) -> None:
            print(event.to_json(), flush=True)

        callbacks.append(print_json)
    trainer = Trainer(config, callbacks=callbacks, command_line=["lunaseg", *sys.argv[1:]])
    restore = install_stop_signals(trainer)
    try:
        result = trainer.fit()
    finally:
        restore()
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
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
            f"best validation (epoch {result.best_epoch}): nodule recall "
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
        print(
            f"no checkpoint_best.pt: no validated epoch reached voxel precision "
            f"{config.best_min_precision:g} (--best-min-precision)",
            file=out,
        )
    return 0

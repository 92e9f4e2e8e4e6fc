"""``lunaseg``: the command-line face of the headless core.

Thin by design: parse options, call ``src_train``, print results. Every subcommand has a pair of
functions below, ``_add_<name>(subparsers)`` and ``_run_<name>(args) -> int``. Errors that a user
can fix (:class:`LunaSegError`) are printed as one line, without a traceback, and exit with 2;
``lunaseg --debug COMMAND`` shows their traceback instead.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from src_train import __version__
from src_train.errors import LunaSegError

log = logging.getLogger("lunaseg")

#: Default folder for the synthetic data set when a command is given none.
DEFAULT_DATA_DIR = "lunaseg-data"


# ---------------------------------------------------------------------------------------------
# synth / mask / mask-report  (data and ground truth)
# ---------------------------------------------------------------------------------------------
def _add_synth(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "synth",
        help="write a synthetic chest-CT data set in LUNA16 layout",
        description="Write synthetic chest CT scans in LUNA16 layout (subset0/<uid>.mhd, "
        "annotations.csv, candidates.csv) with the true nodule shapes in truth/.",
    )
    p.add_argument(
        "out_dir",
        nargs="?",
        default=DEFAULT_DATA_DIR,
        metavar="OUT_DIR",
        help=f"folder to write (default: {DEFAULT_DATA_DIR})",
    )
    p.add_argument("--scans", type=int, default=8, help="number of scans (default: 8)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument(
        "--overwrite", action="store_true", help="replace an earlier synthetic data set there"
    )
    p.add_argument(
        "--tiny",
        action="store_true",
        help="small coarse scans (~112 px, ~40 slices) for quick trials and tests",
    )
    p.add_argument("--size", type=int, metavar="PX", help="in-plane size of every scan, pixels")
    p.add_argument("--slices", type=int, metavar="N", help="slices of every scan")
    p.add_argument(
        "--compress", action="store_true", help="store the CT as compressed .zraw (smaller)"
    )
    p.set_defaults(func=_run_synth)


def _run_synth(args: argparse.Namespace) -> int:
    import time
    from collections import Counter
    from dataclasses import replace

    from src_train.synth import SynthConfig, write_dataset

    config = SynthConfig.tiny() if args.tiny else SynthConfig()
    if args.size is not None:
        config = replace(config, inplane_px_range=(args.size, args.size), inplane_px_multiple=1)
    if args.slices is not None:
        config = replace(config, slices_range=(args.slices, args.slices))
    if args.compress:
        config = replace(config, compress_ct=True)
    started = time.perf_counter()
    folder = write_dataset(
        args.out_dir, n_scans=args.scans, seed=args.seed, config=config, overwrite=args.overwrite
    )
    seconds = time.perf_counter() - started
    uids = folder.series_uids
    kinds = Counter(n.kind for uid in uids for n in folder.true_nodules(uid))
    n_nodules = sum(kinds.values())
    shapes = [folder.load(uid).shape_irc for uid in uids[:1]]
    print(f"wrote {len(uids)} scans with {n_nodules} nodules in {seconds:.1f} s to {folder.root}")
    print("  kinds: " + ", ".join(f"{kind} {count}" for kind, count in sorted(kinds.items())))
    if shapes:
        print(f"  first scan (index, row, col): {shapes[0]}")
    print(f"  scans: {folder.root / 'subset0'}/<uid>.mhd   true shapes: {folder.root / 'truth'}")
    print(f"  annotations: {folder.root / 'annotations.csv'}")
    return 0


def _add_mask(sub: argparse._SubParsersAction) -> None:
    from src_train.masks import REFERENCE_METHOD, available_methods

    p = sub.add_parser(
        "mask",
        help="generate voxel masks from point annotations",
        description="Write one uint8 mask <uid>_mask.mhd per series (1 = nodule, compressed, "
        "the CT's geometry) and a per-nodule table nodules.csv (center in mm and voxels, "
        "diameter, method, radii, box, voxel count, notes). Annotated series that are not on "
        "disk are listed and skipped. Where the folder has true shapes (truth/, synthetic "
        "data), prints each true nodule's Dice and the mean.",
    )
    p.add_argument("data_dir", metavar="DATA_DIR", help="LUNA16-layout folder")
    p.add_argument("--out", metavar="OUT_DIR", help="output folder (default: DATA_DIR/masks)")
    _add_threshold_argument(p)
    p.add_argument(
        "--series", nargs="+", metavar="UID", help="only these series (default: every one)"
    )
    p.add_argument(
        "--method",
        choices=available_methods(),
        default=REFERENCE_METHOD,
        help=f"mask method (default: {REFERENCE_METHOD}, the SPEC's bounding-box growth)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace existing masks")
    p.add_argument(
        "--skip-outside",
        action="store_true",
        help="skip (and flag) nodules whose center lies outside their scan instead of failing",
    )
    p.set_defaults(func=_run_mask)


#: Missing series ``lunaseg mask`` names before it says "and N more".
MISSING_LISTED = 10


def _run_mask(args: argparse.Namespace) -> int:
    from src_train.ct import CtVolume
    from src_train.luna import LunaFolder, list_uids
    from src_train.masks import (
        MASK_SUFFIX,
        MASK_TABLE,
        NoduleMask,
        NoduleScore,
        score_against_truth,
        write_masks,
    )

    folder = LunaFolder(args.data_dir)
    out = Path(args.out) if args.out else Path(args.data_dir) / "masks"
    missing = folder.missing_series
    if missing:
        print(
            f"{len(missing)} annotated series not on disk, skipped: "
            f"{list_uids(missing, MISSING_LISTED)}"
        )
    written: list[str] = []
    scores: list[NoduleScore] = []

    def on_series(ct: CtVolume, records: list[NoduleMask]) -> None:
        written.append(ct.series_uid)
        if folder.has_truth:
            scores.extend(score_against_truth(folder, ct, records, args.method))

    records = write_masks(
        folder,
        out,
        args.threshold_hu,
        args.method,
        overwrite=args.overwrite,
        on_outside="skip" if args.skip_outside else "raise",
        progress=_mask_progress,
        series=args.series,
        on_series=on_series,
    )
    print(
        f"{len(written)} masks <uid>{MASK_SUFFIX} ({args.method}, {args.threshold_hu:g} HU) "
        f"and {len(records)} nodule rows ({MASK_TABLE}) written to {out}"
    )
    for rec in (r for r in records if r.notes):
        x, y, z = rec.center_xyz_mm
        print(f"  {rec.nodule.series_uid} ({x:.1f}, {y:.1f}, {z:.1f}) mm: {'; '.join(rec.notes)}")
    if scores:
        print("Dice against the true shapes (truth/), per true nodule:")
        for score in scores:
            notes = f"  [{score.notes}]" if score.notes else ""
            print(
                f"  {score.series_uid} label {score.label} ({score.kind}, "
                f"{score.diameter_mm:.1f} mm): {score.dice:.3f}{notes}"
            )
        mean = sum(s.dice for s in scores) / len(scores)
        print(f"mean Dice {mean:.3f} over {len(scores)} true nodules ({args.method})")
    return 0


def _mask_progress(done: int, total: int, message: str) -> None:
    log.info("[%d/%d] %s", done, total, message)


def _add_threshold_argument(p: argparse.ArgumentParser) -> None:
    """``--threshold-hu HU`` of ``mask`` and ``mask-report`` (dense = strictly above it);
    ``--threshold`` is kept as its older name. Parsed into ``args.threshold_hu``."""
    from src_train.masks import DEFAULT_THRESHOLD_HU

    p.add_argument(
        "--threshold-hu",
        "--threshold",
        dest="threshold_hu",
        type=float,
        default=DEFAULT_THRESHOLD_HU,
        metavar="HU",
        help=f"density threshold in HU; dense = strictly above it (default: "
        f"{DEFAULT_THRESHOLD_HU}; --threshold is an older name of this option)",
    )


def _add_mask_report(sub: argparse._SubParsersAction) -> None:
    from src_train.masks import available_methods

    p = sub.add_parser(
        "mask-report",
        help="compare mask methods against true shapes",
        description="Score every mask method against the true nodule shapes of a synthetic "
        "data set: Dice per scan, per nodule, per size band and per kind. Prints a table and "
        "writes mask_report_summary.csv, mask_report_nodules.csv, mask_report.png and "
        "mask_report_case.png (the best method's worst nodule next to grow).",
    )
    p.add_argument("data_dir", metavar="DATA_DIR", help="folder with truth/ (lunaseg synth)")
    p.add_argument("--out", metavar="DIR", help="output folder (default: DATA_DIR/mask-report)")
    _add_threshold_argument(p)
    p.add_argument(
        "--methods",
        nargs="+",
        choices=available_methods(),
        metavar="NAME",
        help=f"methods to compare (default: all: {', '.join(available_methods())})",
    )
    p.set_defaults(func=_run_mask_report)


def _run_mask_report(args: argparse.Namespace) -> int:
    from src_train.luna import LunaFolder
    from src_train.masks import mask_report, plot_mask_report, plot_report_case

    folder = LunaFolder(args.data_dir)
    out = Path(args.out) if args.out else Path(args.data_dir) / "mask-report"
    report = mask_report(folder, args.methods, args.threshold_hu, progress=_mask_progress)
    print(report.to_markdown())
    if report.unmatched:
        print(f"true nodules without an annotation (scored 0): {', '.join(report.unmatched)}")
    paths = [*report.write_csv(out), plot_mask_report(report, out / "mask_report.png")]
    case = plot_report_case(folder, report, out / "mask_report_case.png")
    if case is not None:
        paths.append(case)
    print(f"best method: {report.best_method()}; written: {', '.join(str(p) for p in paths)}")
    return 0


# ---------------------------------------------------------------------------------------------
# cache / train  (training)
# ---------------------------------------------------------------------------------------------
def _add_cache(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "cache",
        help="prepare a data folder for training (memory-mapped arrays)",
        description="Write per-series int16 CT and uint8 mask arrays (+ meta.json) that "
        "training reads by crop. Up-to-date entries are kept; stale ones are rebuilt. "
        "Costs 3 bytes per voxel (about 1.5 x the unpacked .raw files).",
    )
    p.add_argument(
        "data_dir",
        nargs="?",
        default=DEFAULT_DATA_DIR,
        metavar="DATA_DIR",
        help=f"LUNA16-layout folder (default: {DEFAULT_DATA_DIR})",
    )
    p.add_argument("--cache-dir", default=None, help="where to write (default: DATA_DIR/cache)")
    p.add_argument(
        "--threshold-hu",
        type=float,
        default=None,
        help="mask density threshold in HU (default: the SPEC's -700)",
    )
    p.add_argument("--mask-method", default=None, help="mask method (default: grow)")
    p.set_defaults(func=_run_cache)


def _run_cache(args: argparse.Namespace) -> int:
    from src_train.data import SeriesCache, check_training_folder

    options = {"threshold_hu": args.threshold_hu, "mask_method": args.mask_method}
    cache = SeriesCache(
        args.data_dir, args.cache_dir, **{k: v for k, v in options.items() if v is not None}
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


#: ``lunaseg train`` option -> TrainConfig field, for options whose names differ.
_TRAIN_OPTION_FIELDS = {"workers": "num_workers"}


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a segmentation model",
        description="Train the 2-D U-Net (or SegNet) on nodule crops of a LUNA16-layout "
        "folder; the run folder gets config.json, train.log, metrics.jsonl, checkpoints and "
        "TensorBoard logs. SIGINT/SIGTERM stop cleanly after the current batch (checkpoint "
        "saved). Multi-GPU: torchrun --nproc_per_node N -m src_train.train DATA_DIR ...",
        epilog="Defaults are those of src_train.train.TrainConfig; the run's config.json "
        "records every value used.",
        argument_default=argparse.SUPPRESS,
    )
    p.add_argument(
        "data_dir",
        nargs="?",
        metavar="DATA_DIR",
        help=f"LUNA16-layout folder (default: {DEFAULT_DATA_DIR})",
    )
    add = p.add_argument
    add("--run-dir", help="run folder (default: runs/unet)")
    add("--epochs", type=int, help="last epoch to train")
    add("--epoch-samples", type=int, help="training crops per epoch (all processes together)")
    add("--batch-size", type=int, help="training batch size per process")
    add("--val-batch-size", type=int, help="validation slices per batch")
    add("--workers", type=int, help="data-loader worker processes (0 = in the main process)")
    add("--val-stride", type=int, help="every N-th series is held out for validation")
    add("--val-every", type=int, help="validate on epoch 1, every N-th epoch and the last")
    add("--model", choices=("unet", "segnet"), help="architecture")
    add("--depth", type=int, help="resolution levels of the model")
    add("--filters", type=int, help="filters at the top level (doubling per level)")
    add(
        "--loss",
        choices=("dice-fn", "dice", "bce", "focal"),
        help="dice-fn = soft Dice + FN-WEIGHT x false-negative Dice (the SPEC's)",
    )
    add("--fn-weight", type=float, help="weight of the false-negative Dice in dice-fn")
    add("--focal-gamma", type=float, help="focusing exponent of the focal loss")
    add("--lr", type=float, help="Adam learning rate")
    add("--augment", help="comma list of flip,offset,scale,rotate,noise; 'all' or 'none'")
    add("--seed", type=int, help="random seed")
    add("--device", help="auto (CUDA when present), cpu or cuda[:N]")
    add("--threads", type=int, help="CPU threads for torch (0 = torch's default)")
    add(
        "--amp",
        choices=("auto", "bf16", "fp16", "off"),
        help="mixed precision (auto: bf16/fp16 on GPUs; bf16 on CPUs with native bf16)",
    )
    add(
        "--channels-last",
        choices=("auto", "on", "off"),
        help="channels_last memory format (auto: on GPUs, and on CPUs with bf16)",
    )
    add("--cache-dir", help="cache folder (default: DATA_DIR/cache)")
    add("--threshold-hu", type=float, help="mask density threshold in HU")
    add("--mask-method", help="mask method (see 'lunaseg mask --help')")
    add("--crop-size", type=int, help="training crop side, pixels")
    add("--window-size", type=int, help="window around a nodule the crop is taken from")
    add("--context-slices", type=int, help="neighbouring slices each side (channels 2N+1)")
    add("--tb-images", type=int, help="validation slices drawn to TensorBoard per validation")
    add("--progress-every", type=int, help="batch progress every N batches")
    add("--resume", action="store_true", help="continue from RUN_DIR/checkpoint_latest.pt")
    add("--overwrite", action="store_true", help="start over in a run folder that holds a run")
    add(
        "--no-tensorboard",
        dest="tensorboard",
        action="store_false",
        help="do not write TensorBoard logs",
    )
    add(
        "--progress-json",
        action="store_true",
        help="print one JSON object per event (batch, validation, epoch, checkpoint, end) "
        "to stdout; logs go to stderr",
    )
    p.set_defaults(func=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    import os

    from src_train.train import ProgressEvent, TrainConfig, Trainer, install_stop_signals

    given = {
        _TRAIN_OPTION_FIELDS.get(k, k): v
        for k, v in vars(args).items()
        if k not in ("func", "command", "verbose", "progress_json")
    }
    given.setdefault("data_dir", DEFAULT_DATA_DIR)
    config = TrainConfig(**given)
    callbacks = []
    if getattr(args, "progress_json", False):

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
    out = sys.stderr if getattr(args, "progress_json", False) else sys.stdout
    state = "stopped on request" if result.stopped else "done"
    print(
        f"{state}: epoch {result.epoch}/{config.epochs}, {result.samples_seen} samples, "
        f"run folder {result.run_dir}",
        file=out,
    )
    if result.best_epoch is not None:
        best = result.best_metrics
        print(
            f"best validation (epoch {result.best_epoch}): recall {best['recall']:.3f}, "
            f"precision {best['precision']:.3f}, F1 {best['f1']:.3f}",
            file=out,
        )
    return 0


# ---------------------------------------------------------------------------------------------
# infer / eval  (inference and evaluation)
# ---------------------------------------------------------------------------------------------
def _add_infer(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "infer",
        help="segment series with a trained model; write probabilities, masks, candidates",
        description="Run a checkpoint over every slice of each series and write, in OUT_DIR, "
        "<uid>_prob.mhd (uint8 = round(255 x probability)), <uid>_pred.mhd (0/1 mask), "
        "<uid>_error.mhd where annotations exist (1 TP, 2 FN, 3 FP against the generated "
        "masks), candidates.csv (LUNA16 submission format: seriesuid,coordX,coordY,coordZ,"
        "probability + extra columns) and seriesuids.csv (the series processed, for "
        "'lunaseg eval'). Existing outputs are never replaced without --overwrite.",
    )
    p.add_argument(
        "data",
        nargs="?",
        default=DEFAULT_DATA_DIR,
        metavar="DATA_DIR_OR_SERIES",
        help="a LUNA16-layout folder, one series (.mhd, .nii(.gz), .nrrd, DICOM folder); "
        f"default: the synthetic data set in {DEFAULT_DATA_DIR}/ ('lunaseg synth' writes it)",
    )
    p.add_argument("--out", required=True, metavar="OUT_DIR", help="output folder")
    p.add_argument(
        "--checkpoint", default=None, help="model checkpoint (default: the shipped demo U-Net)"
    )
    p.add_argument("--series", nargs="+", metavar="UID", help="only these series")
    p.add_argument("--limit", type=int, metavar="N", help="only the first N series")
    p.add_argument(
        "--threshold", type=float, help="probability threshold of the mask (default: 0.5)"
    )
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda[:N]")
    p.add_argument("--batch-size", type=int, help="slices per pass (default: fastest measured)")
    p.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16", "fp16"),
        default="auto",
        help="autocast dtype: auto = bf16 on CPUs that support it, fp16/bf16 on CUDA",
    )
    p.add_argument(
        "--no-crop",
        dest="crop",
        action="store_false",
        help="run on whole slices instead of the box around the body",
    )
    p.add_argument(
        "--min-diameter-mm",
        type=float,
        help="drop candidates of a smaller equivalent diameter (default: CandidateConfig's)",
    )
    p.add_argument(
        "--min-probability",
        type=float,
        help="drop candidates whose highest probability is lower (default: CandidateConfig's)",
    )
    p.add_argument("--no-truth", action="store_true", help="skip the ground-truth comparison")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.set_defaults(func=_run_infer)


def _run_infer(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from src_train.infer import DEFAULT_THRESHOLD, CandidateConfig, InferPlan, infer_to_folder

    if args.data == DEFAULT_DATA_DIR and not Path(args.data).exists():
        raise LunaSegError(
            f"The default data folder {DEFAULT_DATA_DIR}/ does not exist; run 'lunaseg synth' "
            "to write the synthetic data set, or give a LUNA16 folder or a series."
        )
    options = {"min_diameter_mm": args.min_diameter_mm, "min_probability": args.min_probability}
    post = replace(CandidateConfig(), **{k: v for k, v in options.items() if v is not None})

    def model_line(plan: InferPlan) -> None:
        c = plan.model_config
        print(f"model {plan.checkpoint} ({c.arch}, depth {c.depth}, {c.filters} filters)")

    summary = infer_to_folder(
        args.data,
        args.out,
        checkpoint=args.checkpoint or None,
        series=args.series,
        limit=args.limit,
        device=args.device,
        batch_size=args.batch_size,
        threshold=DEFAULT_THRESHOLD if args.threshold is None else args.threshold,
        precision=args.precision,
        crop_to_body=args.crop,
        candidates=post,
        with_truth=not args.no_truth,
        overwrite=args.overwrite,
        on_start=model_line,
        on_series=lambda report: print(report.describe(), flush=True),
    )
    csv_path = summary.candidates_csv
    print(f"wrote {len(summary.series)} series and {csv_path} ({summary.n_candidates} candidates)")
    if summary.froc is not None:
        froc = summary.froc
        print(
            f"nodule recall {froc.recall:.3f} ({froc.n_detected}/{froc.n_nodules}), "
            f"{froc.candidates_per_scan:.1f} candidates per scan, CPM {froc.cpm:.3f}"
        )
        print(
            f"full report: lunaseg eval --annotations {summary.plan.annotations_path} "
            f"--candidates {csv_path}"
        )
    print(f"total {summary.seconds:.1f} s")
    return 0


def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="score candidates the LUNA16 way (FROC, CPM)",
        description="A candidate hits a nodule when its center is closer than the nodule's "
        "radius; several hits on one nodule count once; hits on excluded findings are ignored; "
        "at most 100 candidates per scan count. Prints recall, candidates "
        "per scan, sensitivity at 1/8..8 false positives per scan and their mean (CPM); writes "
        "froc.csv and froc.png.",
    )
    p.add_argument("--annotations", required=True, help="annotations.csv (world mm, diameters)")
    p.add_argument("--candidates", required=True, help="submission CSV (e.g. from lunaseg infer)")
    p.add_argument("--excluded", help="annotations_excluded.csv: findings whose hits are ignored")
    p.add_argument(
        "--series-list",
        help="series to score, one UID per line (default: seriesuids.csv beside the "
        "candidates if present, else the series named in the annotations or candidates)",
    )
    p.add_argument("--out", help="folder for froc.csv and froc.png (default: the candidates')")
    p.add_argument("--max-marks", type=int, help="candidates counted per scan (default: 100)")
    p.add_argument("--overwrite", action="store_true", help="replace froc.csv/froc.png")
    p.set_defaults(func=_run_eval)


def _run_eval(args: argparse.Namespace) -> int:
    from src_train.errors import OutputExistsError
    from src_train.evaluate import (
        MAX_MARKS_PER_SCAN,
        SERIES_LIST_NAME,
        evaluate_froc,
        plot_froc,
        read_excluded,
        read_series_list,
        read_submission,
        write_froc_csv,
    )
    from src_train.luna import read_annotations

    candidates_path = Path(args.candidates)
    out_dir = Path(args.out) if args.out else candidates_path.parent
    curve_path, plot_path = out_dir / "froc.csv", out_dir / "froc.png"
    if not args.overwrite:
        for path in (curve_path, plot_path):
            if path.exists():
                raise OutputExistsError(f"{path} already exists; pass --overwrite or --out.")
    nodules = read_annotations(args.annotations)
    candidates = read_submission(candidates_path)
    excluded = read_excluded(args.excluded) if args.excluded else []
    series_list = Path(args.series_list) if args.series_list else None
    if series_list is None and (candidates_path.parent / SERIES_LIST_NAME).is_file():
        series_list = candidates_path.parent / SERIES_LIST_NAME
        print(f"series list: {series_list}")
    uids = read_series_list(series_list) if series_list else None
    result = evaluate_froc(
        nodules,
        candidates,
        excluded=excluded,
        series_uids=uids,
        max_marks_per_scan=MAX_MARKS_PER_SCAN if args.max_marks is None else args.max_marks,
    )
    print(result.summary())
    write_froc_csv(result, curve_path, overwrite=args.overwrite)
    plot_froc(result, plot_path, overwrite=args.overwrite)
    print(f"wrote {curve_path} and {plot_path}")
    return 0


# ---------------------------------------------------------------------------------------------
_SUBCOMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (
    _add_synth,
    _add_mask,
    _add_mask_report,
    _add_cache,
    _add_train,
    _add_infer,
    _add_eval,
)

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
        print(f"lunaseg {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

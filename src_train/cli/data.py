"""``lunaseg synth``, ``mask`` and ``mask-report``: data and ground truth from points."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from src_train import DEFAULT_DATA_DIR
from src_train.synth import DEFAULT_SCANS, DEFAULT_SEED

log = logging.getLogger("lunaseg")


def add_synth(sub: argparse._SubParsersAction) -> None:
    """``lunaseg synth``."""
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
    p.add_argument(
        "--scans",
        type=int,
        default=DEFAULT_SCANS,
        help=f"number of scans (default: {DEFAULT_SCANS})",
    )
    p.add_argument(
        "--seed", type=int, default=DEFAULT_SEED, help=f"random seed (default: {DEFAULT_SEED})"
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier synthetic data set there (the same one is kept as it is)",
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

    from src_train.synth import SynthConfig, same_dataset, write_dataset

    config = SynthConfig.tiny() if args.tiny else SynthConfig()
    if args.size is not None:
        config = replace(config, inplane_px_range=(args.size, args.size), inplane_px_multiple=1)
    if args.slices is not None:
        config = replace(config, slices_range=(args.slices, args.slices))
    if args.compress:
        config = replace(config, compress_ct=True)
    if not args.overwrite and same_dataset(args.out_dir, args.scans, args.seed, config):
        print(
            f"{args.out_dir} already holds this synthetic data set ({args.scans} scans, seed "
            f"{args.seed}); nothing to write (--overwrite writes it again)"
        )
        return 0
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


def add_mask(sub: argparse._SubParsersAction) -> None:
    """``lunaseg mask``."""
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
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier run's output folder as a whole (masks of series not asked "
        "for this time included)",
    )
    p.add_argument(
        "--skip-outside",
        action="store_true",
        help="skip (and flag) nodules whose center lies outside their scan instead of failing",
    )
    p.set_defaults(func=_run_mask)


def _run_mask(args: argparse.Namespace) -> int:
    from src_train.ct import CtVolume
    from src_train.luna import LunaFolder
    from src_train.masks import (
        MASK_SUFFIX,
        MASK_TABLE,
        NoduleMask,
        NoduleScore,
        score_against_truth,
        write_masks,
    )

    folder = LunaFolder(args.data_dir)  # logs the annotated series that are not on disk
    out = Path(args.out) if args.out else Path(args.data_dir) / "masks"
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


def add_mask_report(sub: argparse._SubParsersAction) -> None:
    """``lunaseg mask-report``."""
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
    p.add_argument("--overwrite", action="store_true", help="replace an earlier report there")
    p.set_defaults(func=_run_mask_report)


def _run_mask_report(args: argparse.Namespace) -> int:
    from src_train.luna import LunaFolder
    from src_train.masks import write_mask_report

    folder = LunaFolder(args.data_dir)
    out = Path(args.out) if args.out else Path(args.data_dir) / "mask-report"
    report, paths = write_mask_report(
        folder,
        out,
        args.methods,
        args.threshold_hu,
        overwrite=args.overwrite,
        progress=_mask_progress,
    )
    print(report.to_markdown())
    if report.unmatched:
        print(f"true nodules without an annotation (scored 0): {', '.join(report.unmatched)}")
    print(f"best method: {report.best_method()}; written: {', '.join(str(p) for p in paths)}")
    return 0

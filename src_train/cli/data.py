"""``lunaseg synth``, ``mask``, ``mask-report`` and ``review``: data and ground truth."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from src_train import DEFAULT_DATA_DIR
from src_train.cli.common import refuse_bad_reviews, report_failures
from src_train.errors import AnnotationError
from src_train.synth import DEFAULT_SCANS, DEFAULT_SEED
from src_train.synth.config import MAX_TRUTH_LABEL
from src_train.synth.protocols import FAMILY_NAMES, MIXED

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
    p.add_argument(
        "--protocol",
        metavar="FAMILY",
        help=f"scanner protocol family: {', '.join(FAMILY_NAMES)} (default: {MIXED}, a family "
        "drawn per scan; with --tiny: the tiny ranges)",
    )
    p.add_argument(
        "--nodules",
        type=_nodule_range,
        metavar="N|LOW-HIGH",
        help="nodules per scan, or a range to draw from (default: 1-4, as LUNA16's scans; "
        "with --tiny 2-4); denser scans give a training run more distinct nodules. Like "
        "--size and --slices it draws other scans under the same series UIDs: give a set of "
        "other options a seed of its own before merging folders",
    )
    p.set_defaults(func=_run_synth)


def _nodule_range(text: str) -> tuple[int, int]:
    """``"6"`` -> (6, 6), ``"6-10"`` -> (6, 10); anything else is an argparse error."""
    low_text, dash, high_text = text.partition("-")
    try:
        low, high = int(low_text), int(high_text if dash else low_text)
    except ValueError:
        low, high = -1, -1
    if not 0 <= low <= high <= MAX_TRUTH_LABEL:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give a count (e.g. 8) or a range LOW-HIGH (e.g. 6-10) of whole numbers "
            f"from 0 to {MAX_TRUTH_LABEL}, LOW not above HIGH"
        )
    return low, high


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
    if args.protocol is not None:
        config = replace(config, protocol=args.protocol)
    if args.nodules is not None:
        config = replace(config, nodules_per_scan_range=args.nodules)
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
        "disk are listed and skipped. Reviewers' verdicts in DATA_DIR/reviews/ are applied "
        "(rejected nodules dropped, corrected ones taken voxel for voxel, added ones grown like "
        "annotations) unless --no-reviews. Where the folder has true shapes (truth/, synthetic "
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
    p.add_argument(
        "--no-reviews",
        dest="use_reviews",
        action="store_false",
        help="ignore the verdicts in DATA_DIR/reviews/ (masks from the annotations alone)",
    )
    p.set_defaults(func=_run_mask)


def _run_mask(args: argparse.Namespace) -> int:
    from collections import Counter

    from src_train.commands.mask_folder import MASK_SUFFIX, MASK_TABLE, write_masks
    from src_train.ct import CtVolume
    from src_train.luna import LunaFolder
    from src_train.masks import NoduleScore, load_series_truth
    from src_train.reviews import STATUSES, ReviewBook, ReviewedSeries, score_reviewed

    if args.use_reviews:
        refuse_bad_reviews(args.data_dir)
    folder = LunaFolder(args.data_dir)  # logs the annotated series that are not on disk
    out = Path(args.out) if args.out else Path(args.data_dir) / "masks"
    book = ReviewBook.for_folder(folder) if args.use_reviews else None
    for problem in book.problems if book is not None else []:
        print(f"review row not applied: {problem}")
    written: list[str] = []
    scores: list[NoduleScore] = []
    applied: Counter[str] = Counter()
    review_problems: list[str] = []

    def on_reviewed(ct: CtVolume, reviewed: ReviewedSeries) -> None:
        written.append(ct.series_uid)
        applied.update(reviewed.applied)
        review_problems.extend(reviewed.problems)
        truth = load_series_truth(folder, ct) if folder.has_truth else None
        if truth is not None:
            truths = folder.true_nodules(ct.series_uid)
            scores.extend(score_reviewed(reviewed, truth.labels, truths, args.method))

    run = write_masks(
        folder,
        out,
        args.threshold_hu,
        args.method,
        overwrite=args.overwrite,
        on_outside="skip" if args.skip_outside else "raise",
        progress=_mask_progress,
        series=args.series,
        reviews=book if book is not None else False,
        on_reviewed=on_reviewed,
    )
    records = run.records
    print(
        f"{len(written)} masks <uid>{MASK_SUFFIX} ({args.method}, {args.threshold_hu:g} HU) "
        f"and {len(records)} nodule rows ({MASK_TABLE}) written to {out}"
    )
    if book is None:
        print("reviews ignored (--no-reviews): masks from the annotations alone")
    elif book.rows:
        counts = ", ".join(f"{applied[s]} {s}" for s in STATUSES if s in applied) or "none"
        print(f"reviews applied ({book.csv_path}): {counts}")
    else:
        print(f"no reviews in {book.dir} (review nodules in napari: Mask QA > Review)")
    for problem in review_problems:
        print(f"review not applied: {problem}")
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
    again = f"lunaseg mask {args.data_dir} --overwrite" + (f" --out {args.out}" if args.out else "")
    return report_failures("mask", run.failures, f"fix them and run '{again}'")


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
        "mask_report_case.png (one nodule: where the best method loses most against grow, "
        "else the best method's worst; the slice through its true center, one panel per "
        "method, TP green, FN orange, FP red).",
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
    from src_train.commands.mask_report import write_mask_report
    from src_train.luna import LunaFolder

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


#: Unreviewed series ``lunaseg review`` lists before it says "and N more" (``--all``: every one).
UNREVIEWED_LISTED = 20


def add_review(sub: argparse._SubParsersAction) -> None:
    """``lunaseg review``."""
    from src_train.reviews import EXPORT_CSV, REVIEWS_CSV, REVIEWS_DIR

    p = sub.add_parser(
        "review",
        help="review progress per status and reviewer; export the reviewed annotations",
        description=f"Read DATA_DIR/{REVIEWS_DIR}/{REVIEWS_CSV} (the verdicts given in napari's "
        "Mask QA > Review), print how many nodules are reviewed per status and per reviewer, "
        "list the series with unreviewed nodules, and export the reviewed annotations as a "
        "LUNA16-style CSV (seriesuid,coordX,coordY,coordZ,diameter_mm + review; rejected "
        "nodules left out, added ones included). Rows that cannot be applied are named with "
        "their file and line.",
    )
    p.add_argument("data_dir", metavar="DATA_DIR", help="LUNA16-layout folder")
    p.add_argument(
        "--export",
        metavar="CSV",
        help=f"where to write the reviewed annotations (default: DATA_DIR/{REVIEWS_DIR}/"
        f"{EXPORT_CSV}, refreshed on every run; another existing file needs --overwrite)",
    )
    p.add_argument("--no-export", action="store_true", help="print progress only")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --export file")
    p.add_argument(
        "--all", action="store_true", help="list every unreviewed series (default: the first 20)"
    )
    p.add_argument(
        "--agreement",
        action="store_true",
        help="where several reviewers judged the same nodules: their verdicts per nodule "
        "(disagreements first), Cohen's kappa per pair (Fleiss' for 3+), Dice of their masks",
    )
    p.set_defaults(func=_run_review)


def _run_review(args: argparse.Namespace) -> int:
    from src_train.errors import OutputExistsError
    from src_train.luna import LunaFolder
    from src_train.reviews import (
        EXPORT_CSV,
        STATUSES,
        ReviewBook,
        export_reviewed_annotations,
        review_progress,
    )

    refuse_bad_reviews(args.data_dir)
    folder = LunaFolder(args.data_dir)
    book = ReviewBook.for_folder(folder)
    if folder.annotations_path is None and not book.rows:
        raise AnnotationError(
            f"{folder.root} has no annotations.csv (nor annotations_with_malignancy.csv) and "
            f"no reviews in {book.csv_path}: there is nothing to review. Point lunaseg review "
            "at a folder with annotations (lunaseg synth writes one)."
        )
    if args.agreement:
        from src_train.cli.qa import print_agreement

        return print_agreement(folder, book)
    nodules = folder.nodules_by_series
    progress = review_progress(book, nodules)
    print(f"{book.csv_path}: {len(book.rows)} review rows" if book.rows else "no reviews yet")
    for problem in progress.problems:
        print(f"not applied: {problem}")
    print(progress.line())
    if progress.by_status:
        counts = ", ".join(
            f"{s} {progress.by_status[s]}" for s in STATUSES if s in progress.by_status
        )
        print(f"by status: {counts}")
        print("by reviewer:")
        for reviewer, counter in sorted(progress.by_reviewer.items()):
            detail = ", ".join(f"{s} {counter[s]}" for s in STATUSES if s in counter)
            print(f"  {reviewer or '(no name)'}: {sum(counter.values())} ({detail})")
    left = progress.unreviewed_series
    shown = left if args.all else left[:UNREVIEWED_LISTED]
    print(f"series with unreviewed nodules: {len(left)} of {len(progress.series)}")
    for entry in shown:
        print(f"  {entry.series_uid}: {entry.reviewed}/{entry.nodules} reviewed")
    if len(left) > len(shown):
        print(f"  ... and {len(left) - len(shown)} more (--all lists every one)")
    if args.no_export:
        return 0
    default = book.dir / EXPORT_CSV
    target = Path(args.export) if args.export else default
    protected = {folder.annotations_path, folder.root / "annotations.csv", book.csv_path}
    if any(p is not None and target.resolve() == p.resolve() for p in protected):
        raise OutputExistsError(
            f"{target} is an input of the review (annotations or reviews.csv); export to "
            f"another file (default: {default})."
        )
    overwrite = args.overwrite or target == default
    path, count = export_reviewed_annotations(book, nodules, target, overwrite=overwrite)
    print(f"exported {count:,} reviewed annotations to {path}")
    return 0

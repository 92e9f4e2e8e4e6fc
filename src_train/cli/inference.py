"""``lunaseg infer`` (options generated from InferRunOptions) and ``lunaseg eval``."""

from __future__ import annotations

import argparse
from pathlib import Path

from src_train import DEFAULT_DATA_DIR
from src_train.errors import LunaSegError


def add_infer(sub: argparse._SubParsersAction) -> None:
    """``lunaseg infer``: one option per :class:`~src_train.infer.InferRunOptions` field."""
    from src_train.infer import InferRunOptions
    from src_train.options import add_options

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
    add_options(p, InferRunOptions)
    p.set_defaults(func=run_infer)


def run_infer(args: argparse.Namespace) -> int:
    """Run :func:`~src_train.infer.infer_to_folder` and print one line per series."""
    from src_train.infer import InferPlan, InferRunOptions, infer_to_folder
    from src_train.options import options_from_args

    if args.data == DEFAULT_DATA_DIR and not Path(args.data).exists():
        raise LunaSegError(
            f"The default data folder {DEFAULT_DATA_DIR}/ does not exist; run 'lunaseg synth' "
            "to write the synthetic data set, or give a LUNA16 folder or a series."
        )
    options = options_from_args(InferRunOptions, args)

    def model_line(plan: InferPlan) -> None:
        c = plan.model_config
        print(f"model {plan.checkpoint} ({c.arch}, depth {c.depth}, {c.filters} filters)")

    summary = infer_to_folder(
        args.data,
        args.out,
        options,
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


def add_eval(sub: argparse._SubParsersAction) -> None:
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
    p.set_defaults(func=run_eval)


def run_eval(args: argparse.Namespace) -> int:
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

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
    for note in summary.notes:
        print(note)
    if summary.froc is not None:
        froc = summary.froc
        fps = [froc.fps_per_scan_at(s) for s in (0.9, 0.95)]
        reads = ", ".join(
            f"{f:.2f} FP/scan at {s:.0%}" if f != float("inf") else f"{s:.0%} not reached"
            for s, f in zip((0.9, 0.95), fps, strict=True)
        )
        print(
            f"nodule recall {froc.recall:.3f} ({froc.n_detected}/{froc.n_nodules}), "
            f"{froc.candidates_per_scan:.1f} candidates per scan, {reads}, CPM {froc.cpm:.3f}"
        )
        print(
            f"full report: lunaseg eval --annotations {summary.plan.annotations_path} "
            f"--candidates {csv_path}"
        )
    print(f"total {summary.seconds:.1f} s")
    return 0


def add_eval(sub: argparse._SubParsersAction) -> None:
    """``lunaseg eval``: one option per :class:`~src_train.evaluate.run.EvalOptions` field."""
    from src_train.evaluate.run import EvalOptions
    from src_train.options import add_options

    p = sub.add_parser(
        "eval",
        help="score candidates the LUNA16 way (FROC, CPM)",
        description="Score a submission exactly as LUNA16's evaluation script does: a mark hits "
        "a nodule when its center is closer than the nodule's radius; of several marks on one "
        "nodule the most probable counts; marks on excluded findings are ignored; per scan only "
        "marks above the 101st highest probability count (ties at the cut dropped). "
        "Sensitivities are read off the linearly interpolated FROC curve at 1/8..8 false "
        "positives per scan; their mean is the CPM. Writes froc.csv and froc.png.",
    )
    add_options(p, EvalOptions)
    p.set_defaults(func=run_eval)


def run_eval(args: argparse.Namespace) -> int:
    """Score, print the summary, write the FROC curve and its plot."""
    from src_train.evaluate import plot_froc, write_froc_csv
    from src_train.evaluate.run import FROC_CSV, FROC_PNG, EvalOptions, evaluate_run
    from src_train.options import options_from_args

    options = options_from_args(EvalOptions, args)

    def progress(done: int, total: int, message: str) -> None:
        print(f"\r{message} {done}/{total}", end="" if done < total else "\n", flush=True)

    run = evaluate_run(options, progress=progress if options.bootstrap else None)
    for note in run.notes:
        print(note)
    print(run.result.summary())
    curve = write_froc_csv(run.result, options.out_dir / FROC_CSV, overwrite=options.overwrite)
    plot = plot_froc(run.result, options.out_dir / FROC_PNG, overwrite=options.overwrite)
    print(f"wrote {curve} and {plot}")
    return 0

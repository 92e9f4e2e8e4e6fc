"""``lunaseg infer`` (options generated from InferRunOptions) and ``lunaseg eval``."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from src_train import DEFAULT_DATA_DIR
from src_train.cli.common import EXIT_SERIES_FAILED, refuse_bad_reviews, report_failures
from src_train.errors import LunaSegError


def add_infer(sub: argparse._SubParsersAction) -> None:
    """``lunaseg infer``: one option per field of
    :class:`~src_train.commands.infer_folder.InferRunOptions`."""
    from src_train.commands.infer_folder import InferRunOptions
    from src_train.options import add_options

    p = sub.add_parser(
        "infer",
        help="segment series with a trained model; write probabilities, masks, candidates",
        description="Run a checkpoint over every slice of each series and write, in OUT_DIR, "
        "<uid>_prob.mhd (uint8 = round(255 x probability)), <uid>_pred.mhd (0/1 mask), "
        "<uid>_error.mhd where annotations exist (1 TP, 2 FN, 3 FP against the generated "
        "masks) and <uid>.json (the series' record, written last). When every series is "
        "done: candidates.csv (LUNA16 submission format: seriesuid,coordX,coordY,coordZ,"
        "probability + extra columns) and seriesuids.csv (the series, for 'lunaseg eval'). "
        "Run it again on the same OUT_DIR to resume: complete series are skipped. Split the "
        "series over processes, GPUs or machines sharing OUT_DIR with --num-parts/--part-id "
        "(under torchrun each process takes its rank's part and GPU). A series that fails "
        "is reported and the others go on (exit status 1). OUT_DIR/run.json records the "
        "settings; a run with other settings is refused unless --overwrite.",
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
    p.add_argument(
        "--progress-json",
        action="store_true",
        help="print one JSON object per event (start, series, failed, end: series done/total, "
        "series per minute, ETA) to stdout; other lines go to stderr",
    )
    p.set_defaults(func=run_infer)


def run_infer(args: argparse.Namespace) -> int:
    """Run :func:`~src_train.commands.infer_folder.infer_to_folder`; one line per series,
    failures at the end."""
    from src_train.commands.infer_folder import InferRunOptions, infer_to_folder
    from src_train.infer import InferEvent, InferPlan
    from src_train.options import options_from_args

    if args.data == DEFAULT_DATA_DIR and not Path(args.data).exists():
        raise LunaSegError(
            f"The default data folder {DEFAULT_DATA_DIR}/ does not exist; run 'lunaseg synth' "
            "to write the synthetic data set, or give a LUNA16 folder or a series."
        )
    options = options_from_args(InferRunOptions, args)
    if options.reviewed and Path(args.data).is_dir():
        refuse_bad_reviews(args.data)
    as_json = bool(args.progress_json)
    text = sys.stderr if as_json else sys.stdout

    def say(line: str) -> None:
        print(line, file=text, flush=True)

    def started(plan: InferPlan) -> None:
        for note in plan.notes:
            say(note)
        if plan.todo:
            c = plan.model_config
            say(f"model {plan.checkpoint} ({c.arch}, depth {c.depth}, {c.filters} filters)")
        say(f"{plan.out_dir}: {plan.describe()}")

    def event(e: InferEvent) -> None:
        if as_json:
            print(e.to_json(), flush=True)
        if e.kind == "series":
            say(f"{e.progress_text()} {e.message}")
        elif e.kind == "failed":
            say(f"{e.progress_text()} FAILED {e.series_uid}: {e.message}")

    # The command prints one line per series (with its scores); the runner's own line about
    # each series and its tuning stays in the log at --verbose only, so nothing shows twice.
    runner_log = logging.getLogger("src_train.infer.runner")
    level = runner_log.level
    if not args.verbose:
        runner_log.setLevel(logging.WARNING)
    try:
        summary = infer_to_folder(args.data, args.out, options, on_start=started, on_event=event)
    finally:
        runner_log.setLevel(level)
    plan = summary.plan
    if summary.complete:
        say(
            f"all {len(plan.series)} series complete: wrote {summary.candidates_csv} "
            f"({summary.n_candidates} candidates) and {plan.series_list}"
        )
    else:
        say(
            f"{len(summary.incomplete)} of {len(plan.series)} series not complete yet (failed, "
            "or another part's): candidates.csv and seriesuids.csv are written by the last "
            "part to finish, or by running this command again"
        )
    if summary.froc is not None:
        froc = summary.froc
        fps = [froc.fps_per_scan_at(s) for s in (0.9, 0.95)]
        reads = ", ".join(
            f"{f:.2f} FP/scan at {s:.0%}" if f != float("inf") else f"{s:.0%} not reached"
            for s, f in zip((0.9, 0.95), fps, strict=True)
        )
        say(
            f"nodule recall {froc.recall:.3f} ({froc.n_detected}/{froc.n_nodules}), "
            f"{froc.candidates_per_scan:.1f} candidates per scan, {reads}, CPM {froc.cpm:.3f}"
        )
        say(
            f"full report: lunaseg eval --annotations {plan.annotations_path} "
            f"--candidates {summary.candidates_csv}"
        )
    say(
        f"this process: {len(summary.series)} series computed, {len(plan.skipped)} skipped "
        f"(already complete), {len(summary.failures)} failed in {summary.seconds:.1f} s"
    )
    if summary.ok:
        return 0
    if summary.not_attempted:
        print(
            f"lunaseg infer: the disk is full; {len(summary.not_attempted)} series not "
            "attempted. Free space and run the same command again to resume.",
            file=sys.stderr,
        )
    failures = {f.series_uid: f.reason for f in summary.failures}
    fix = "fix them and run the same command again (complete series are skipped)"
    return report_failures("infer", failures, fix) or EXIT_SERIES_FAILED


def add_eval(sub: argparse._SubParsersAction) -> None:
    """``lunaseg eval``: one option per :class:`~src_train.commands.eval_run.EvalOptions` field."""
    from src_train.commands.eval_run import EvalOptions
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
    from src_train.commands.eval_run import FROC_CSV, FROC_PNG, EvalOptions, evaluate_run
    from src_train.evaluate import plot_froc, write_froc_csv
    from src_train.options import options_from_args

    options = options_from_args(EvalOptions, args)
    if options.reviewed:
        refuse_bad_reviews(Path(options.annotations).parent)

    def progress(done: int, total: int, message: str) -> None:
        print(f"\r{message} {done}/{total}", end="" if done < total else "\n", flush=True)

    # A carriage-return progress line belongs on a terminal only, never in a log file.
    on_terminal = options.bootstrap and sys.stdout.isatty()
    run = evaluate_run(options, progress=progress if on_terminal else None)
    for note in run.notes:
        print(note)
    print(run.result.summary())
    curve = write_froc_csv(run.result, options.out_dir / FROC_CSV, overwrite=options.overwrite)
    plot = plot_froc(run.result, options.out_dir / FROC_PNG, overwrite=options.overwrite)
    print(f"wrote {curve} and {plot}")
    return 0

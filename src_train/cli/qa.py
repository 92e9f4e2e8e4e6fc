"""``lunaseg qa`` (suspicious annotations first) and ``lunaseg review --agreement``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from src_train.luna import LunaFolder
    from src_train.reviews import ReviewBook

from src_train.cli.common import add_data_dir


def add_qa(sub: argparse._SubParsersAction) -> None:
    """``lunaseg qa``."""
    from src_train.masks.density import DEFAULT_THRESHOLD_HU
    from src_train.qa import QA_DIR, SUMMARY_TXT, SUSPICIOUS_CSV

    p = sub.add_parser(
        "qa",
        help="rank annotations by how suspicious they look (most suspicious first)",
        description="Score every annotation (the reviewed list when DATA_DIR/reviews/ holds "
        "verdicts) with a suspicion in [0, 1] and short reasons, from signals that need no "
        "truth: the grown mask's size against the annotated diameter, growth that ran into "
        "its box or along one axis, the HU at and around the center (air, bone, outside the "
        "body), how much of the annotated sphere is dense, other annotations within one "
        "radius, and with --checkpoint the model's probability there. Writes "
        f"{SUSPICIOUS_CSV} (the annotation's own columns, then suspicion,reasons; most "
        f"suspicious first), {SUMMARY_TXT} (one line per reason) and signals.csv (every "
        f"measurement, for the curious) in OUT_DIR "
        f"(default DATA_DIR/{QA_DIR}/, replaced on each run). See docs/qa.md.",
    )
    add_data_dir(p)
    p.add_argument("--checkpoint", metavar="PT", help="a CT checkpoint whose opinion joins in")
    p.add_argument("--out", metavar="OUT_DIR", help=f"output folder (default DATA_DIR/{QA_DIR})")
    p.add_argument(
        "--threshold-hu",
        type=float,
        default=DEFAULT_THRESHOLD_HU,
        metavar="HU",
        help=f"density threshold of the growth, HU (default {DEFAULT_THRESHOLD_HU})",
    )
    p.add_argument("--no-reviews", action="store_true", help="score annotations.csv as it is")
    p.add_argument("--device", default="cpu", help="device of the checkpoint (cpu, cuda, auto)")
    p.add_argument("--top", type=int, default=10, metavar="N", help="rows printed (default 10)")
    p.set_defaults(func=run_qa_command)


def _progress(done: int, total: int, message: str) -> None:
    print(f"\r[{done}/{total}] {message[:60]:60s}", end="", file=sys.stderr, flush=True)


def run_qa_command(args: argparse.Namespace) -> int:
    """Score the folder, write the files, print the summary and the top rows."""
    from src_train.infer import InferenceOptions
    from src_train.luna import LunaFolder
    from src_train.progress import run_steps
    from src_train.qa import (
        QA_DIR,
        SIGNALS_CSV,
        annotation_rows,
        iter_qa,
        load_ct_detector,
        write_qa,
    )
    from src_train.reviews import ReviewBook

    folder = LunaFolder(args.data_dir)
    annotation_rows(folder)  # a folder without series or annotations fails here, before a model
    detector = load_ct_detector(args.checkpoint, args.device) if args.checkpoint else None
    book = None if args.no_reviews else ReviewBook.for_folder(folder)
    steps = iter_qa(
        folder,
        book=book,
        threshold_hu=args.threshold_hu,
        detector=detector,
        options=InferenceOptions(device=args.device) if detector is not None else None,
    )
    result = run_steps(steps, _progress, None, "QA", "series")
    print(file=sys.stderr)
    out = Path(args.out) if args.out else Path(args.data_dir) / QA_DIR
    csv_path, summary = write_qa(result, out)
    for line in result.summary_lines():
        print(line)
    shown = result.rows[: max(0, args.top)]
    if shown:
        print(f"most suspicious {len(shown)}:")
    for scored in shown:
        nodule = scored.row.nodule
        x, y, z = nodule.center_xyz_mm
        print(
            f"  {scored.verdict.suspicion:.3f} {';'.join(scored.verdict.reasons) or '-':24s} "
            f"{nodule.series_uid[-12:]} ({x:.1f}, {y:.1f}, {z:.1f}) mm "
            + ("(added by review)" if scored.row.added else f"line {nodule.row}")
        )
    print(f"written: {csv_path}, {summary}, {csv_path.with_name(SIGNALS_CSV)}")
    return 0


def print_agreement(folder: LunaFolder, book: ReviewBook) -> int:
    """``lunaseg review DATA --agreement``: print the agreement report."""
    from src_train.reviews.agreement import agreement, report_lines

    for line in report_lines(agreement(folder, book)):
        print(line)
    return 0

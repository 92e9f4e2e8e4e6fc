"""Does ``lunaseg qa`` put the bad labels first? And how long does a 1,000-nodule folder take?

Usage::

    python benchmarks/bench_qa.py [--tune-seeds 1 2 3] [--test-seeds 11 12 13 14 15]
                                  [--scans 12] [--per-kind 3] [--timing-nodules 1000]
                                  [--checkpoint PT | --no-checkpoint]

For each seed: a synthetic folder (``src_train.synth``, small scans so it stays fast) gets
label errors at known rows (:mod:`src_train.qa.inject`: centers moved by 1-2 diameters,
diameters off by a factor 2-3, annotations on plain lung and on vessels, duplicates; ``--per-kind``
of each), then QA scores every row. Printed per seed and pooled over the tuning seeds and over
the held-out seeds (the rule's limits were set looking at the tuning seeds only):

* ROC AUC of suspicion, bad rows against good ones;
* precision among the top k (k = the number of injected errors) and which kinds it missed;
* the same for a logistic model fitted on the tuning seeds' signals (the alternative to the
  hand-set rule; docs/qa.md says which one ships and why).

Then the time of ``run_qa`` on a folder of about ``--timing-nodules`` nodules without a
checkpoint, and with one (``--checkpoint``, default the packaged demo detector), and the time
to read one full-size scan.
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _common import cpu_kind, load_text

from src_train.luna import LunaFolder
from src_train.qa import QaResult, ScoredRow, load_ct_detector, run_qa
from src_train.qa.inject import ERROR_KINDS, draw_errors, write_injected
from src_train.qa.measure import RankingScore, score_ranking
from src_train.synth import SynthConfig, write_dataset

#: Small scans (about 180 px, 60 slices, 1.0-1.3 mm pixels) with 3-5 nodules each.
BENCH_CONFIG = SynthConfig.tiny(
    inplane_px_range=(160, 192),
    spacing_inplane_mm_range=(1.0, 1.3),
    slices_range=(50, 80),
    chest_length_mm_range=(110.0, 130.0),
    slice_spacing_mm_range=(1.5, 2.0),
    nodules_per_scan_range=(3, 5),
    diameter_mm_range=(4.0, 30.0),
)
DEMO_CHECKPOINT = Path(__file__).resolve().parents[1] / "src_train" / "assets" / "demo_unet.pt"
FEATURES = (
    "fill",
    "shell",
    "log2 ratio",
    "capped",
    "elongation",
    "HU",
    "body",
    "dup",
    "out",
    "linearity",
    "balance",
)


def features(scored: ScoredRow) -> np.ndarray:
    """The signals of one row as numbers for the logistic model (outside rows: zeros + out)."""
    s = scored.signals
    dup = float(scored.verdict.scores.get("duplicate", 0.0) > 0)
    if s.outside:
        return np.array([0, 0, 0, 0, 0, 0, 0, dup, 1, 0, 1], dtype=np.float64)
    ratio = math.log2(s.diameter_ratio) if s.diameter_ratio > 0 else -4.0
    return np.array(
        [
            s.fill,
            s.shell_fill,
            float(np.clip(ratio, -4, 4)),
            s.capped_axes,
            min(s.elongation, 10.0),
            s.center_hu / 1000.0,
            float(s.outside_body),
            dup,
            0.0,
            min(s.linearity, 20.0),
            s.shell_balance,
        ]
    )


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1e-2, steps: int = 3000) -> np.ndarray:
    """Weights (bias last) of an L2-regularised logistic regression, by gradient descent on
    standardised features; returns ``(mean, std, weights)`` packed in one array."""
    mean, std = x.mean(axis=0), x.std(axis=0) + 1e-9
    z = np.hstack([(x - mean) / std, np.ones((len(x), 1))])
    w = np.zeros(z.shape[1])
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-z @ w))
        w -= 0.5 * (z.T @ (p - y) / len(y) + l2 * np.r_[w[:-1], 0.0])
    return np.concatenate([mean, std, w])


def predict_logistic(packed: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Probabilities of the model :func:`fit_logistic` returned."""
    n = x.shape[1]
    mean, std, w = packed[:n], packed[n : 2 * n], packed[2 * n :]
    z = np.hstack([(x - mean) / std, np.ones((len(x), 1))])
    return 1.0 / (1.0 + np.exp(-z @ w))


def run_seed(seed: int, scans: int, per_kind: int, work: Path) -> tuple[QaResult, list[str]]:
    """One injected folder scored; returns the result and each row's kind in result order."""
    root = work / f"seed{seed}"
    folder = write_dataset(root, scans, seed, BENCH_CONFIG)
    rows = draw_errors(folder, np.random.default_rng(seed), per_kind)
    write_injected(root, rows)
    result = run_qa(LunaFolder(root), book=None)
    by_line = {r.nodule.row + 2: r.kind for r in rows}  # header is line 1, row 0 is line 2
    return result, [by_line[s.row.nodule.row] for s in result.rows]


def describe(name: str, score: RankingScore) -> str:
    """One table line."""
    missed = ", ".join(
        f"{k} {score.missed[k]}/{score.total[k]}" for k in ERROR_KINDS if score.total[k]
    )
    return (
        f"{name:28s} AUC {score.auc:.3f}  precision@k {score.precision_at_k:.3f} (k={score.k})"
        f"  missed: {missed}"
    )


def quality(args: argparse.Namespace, work: Path) -> None:
    """The ranking on tuning and held-out seeds, hand-set rule against a fitted model."""
    runs = {}
    for seed in [*args.tune_seeds, *args.test_seeds]:
        started = time.perf_counter()
        result, kinds = run_seed(seed, args.scans, args.per_kind, work)
        runs[seed] = (result, kinds)
        score = score_ranking([s.verdict.suspicion for s in result.rows], kinds)
        split = "tune" if seed in args.tune_seeds else "held-out"
        print(
            describe(f"seed {seed} ({split}) rule", score),
            f"[{time.perf_counter() - started:.1f} s]",
        )

    def pooled(seeds: list[int]) -> tuple[np.ndarray, np.ndarray, list[str]]:
        x = np.vstack([[features(s) for s in runs[seed][0].rows] for seed in seeds])
        rule = np.concatenate([[s.verdict.suspicion for s in runs[seed][0].rows] for seed in seeds])
        kinds = [k for seed in seeds for k in runs[seed][1]]
        return x, rule, kinds

    x_tune, rule_tune, kinds_tune = pooled(args.tune_seeds)
    x_test, rule_test, kinds_test = pooled(args.test_seeds)
    y_tune = np.array([bool(k) for k in kinds_tune], dtype=np.float64)
    packed = fit_logistic(x_tune, y_tune)
    print()
    print(describe("tune seeds, rule", score_ranking(rule_tune, kinds_tune)))
    print(
        describe(
            "tune seeds, logistic", score_ranking(predict_logistic(packed, x_tune), kinds_tune)
        )
    )
    print(describe("held-out seeds, rule", score_ranking(rule_test, kinds_test)))
    print(
        describe(
            "held-out seeds, logistic", score_ranking(predict_logistic(packed, x_test), kinds_test)
        )
    )
    per_seed = [
        score_ranking([s.verdict.suspicion for s in runs[seed][0].rows], runs[seed][1])
        for seed in args.test_seeds
    ]
    print(
        "held-out seeds, rule, per seed: AUC min "
        f"{min(s.auc for s in per_seed):.3f} "
        f"median {statistics.median(s.auc for s in per_seed):.3f}; "
        f"precision@k min {min(s.precision_at_k for s in per_seed):.3f} "
        f"median {statistics.median(s.precision_at_k for s in per_seed):.3f}"
    )
    if args.show:
        show_errors(runs, args.tune_seeds, args.show)
    weights = packed[2 * len(FEATURES) :]
    print(
        "logistic weights (standardised):",
        ", ".join(f"{n} {w:+.2f}" for n, w in zip(FEATURES, weights, strict=False)),
    )


def _row_text(scored: ScoredRow, kind: str) -> str:
    s = scored.signals
    top = {k: round(v, 2) for k, v in scored.verdict.scores.items() if v > 0.05}
    return (
        f"  {kind or 'good':9s} {scored.verdict.suspicion:.3f} "
        f"d={scored.row.nodule.diameter_mm or 0:5.1f} "
        f"fill={s.fill:.2f} shell={s.shell_fill:.2f} ratio={s.diameter_ratio:.2f} "
        f"off={s.fill_offset_mm:.1f} bal={s.shell_balance:.2f} lin={s.linearity:.1f} "
        f"el={s.elongation:.1f} cap={s.capped_axes} hu={s.center_hu:.0f} {top}"
    )


def show_errors(runs: dict, seeds: list[int], n: int) -> None:
    """The most suspicious good rows and the least suspicious bad rows of the tuning seeds
    (the rows the rule was set by; the held-out seeds' rows are never shown)."""
    pairs = [
        (s, k) for seed in seeds for s, k in zip(runs[seed][0].rows, runs[seed][1], strict=True)
    ]
    good = [p for p in pairs if not p[1]]
    bad = [p for p in pairs if p[1]]
    print(f"\nmost suspicious good rows (tuning seeds, {n}):")
    for scored, kind in sorted(good, key=lambda p: -p[0].verdict.suspicion)[:n]:
        print(_row_text(scored, kind))
    print(f"least suspicious bad rows (tuning seeds, {n}):")
    for scored, kind in sorted(bad, key=lambda p: p[0].verdict.suspicion)[:n]:
        print(_row_text(scored, kind))


def timing(args: argparse.Namespace, work: Path) -> None:
    """Seconds for a ~1,000-nodule folder without a checkpoint, and per series with one."""
    config = SynthConfig(**{**BENCH_CONFIG.__dict__, "nodules_per_scan_range": (8, 12)})
    scans = max(1, args.timing_nodules // 9)
    started = time.perf_counter()
    folder = write_dataset(work / "timing", scans, 7, config)
    made = time.perf_counter() - started
    nodules = sum(len(v) for v in folder.nodules_by_series.values())
    print(f"\ntiming folder: {scans} scans, {nodules} nodules (written in {made:.1f} s)")
    result = run_qa(LunaFolder(folder.root), book=None)
    print(
        f"without checkpoint: {result.seconds:.1f} s for {len(result.rows)} annotations "
        f"({1000 * result.seconds / len(result.rows):.1f} ms each, scan reading included)"
    )
    full = write_dataset(work / "full", 1, 7, SynthConfig())
    started = time.perf_counter()
    ct = full.load(full.series_uids[0])
    read_s = time.perf_counter() - started
    result = run_qa(LunaFolder(full.root), book=None)
    print(
        f"one full-size scan {ct.shape_irc} (index, row, col), {len(result.rows)} nodules: "
        f"reading it {read_s:.2f} s, QA with reading {result.seconds:.2f} s"
    )
    if args.no_checkpoint:
        return
    detector = load_ct_detector(args.checkpoint, "cpu")
    result = run_qa(LunaFolder(folder.root), book=None, detector=detector)
    print(
        f"with {Path(args.checkpoint).name}: {result.seconds:.1f} s for the same "
        f"{len(result.rows)} annotations ({result.seconds / scans:.2f} s per series: the model "
        "over every slice, as lunaseg infer)"
    )


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--tune-seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5, 6])
    p.add_argument("--test-seeds", type=int, nargs="+", default=[21, 22, 23, 24, 25, 26])
    p.add_argument("--scans", type=int, default=12, help="scans per folder")
    p.add_argument("--per-kind", type=int, default=3, help="errors of each kind per folder")
    p.add_argument("--timing-nodules", type=int, default=1000)
    p.add_argument("--checkpoint", default=str(DEMO_CHECKPOINT))
    p.add_argument("--no-checkpoint", action="store_true", help="skip the timing with one")
    p.add_argument("--skip-timing", action="store_true")
    p.add_argument("--show", type=int, default=0, metavar="N", help="print N misranked rows")
    args = p.parse_args()
    print(f"CPU: {cpu_kind()}; torch threads {torch.get_num_threads()}; load {load_text()}")
    with tempfile.TemporaryDirectory(prefix="bench_qa_") as tmp:
        quality(args, Path(tmp))
        if not args.skip_timing:
            timing(args, Path(tmp))
    print(f"load at the end: {load_text()}")


if __name__ == "__main__":
    main()

"""Does the detector hold on scanner protocols it was not trained on? Prints a Markdown table.

Usage::

    python benchmarks/cross_protocol.py OUT_DIR [--short] [--checkpoint PT ...]
        [--train NAME=FAMILY ...] [--test-scans N] [--train-scans N] [--train-args "..."]

For each training set (default ``all=mixed`` and ``thick=thick``: every family, and thick
slices only) it writes a synthetic training folder of that family, trains the segmenter
with ``lunaseg train`` on it, and runs ``lunaseg infer`` with the best checkpoint on a test
folder of every family and of the mixed default. The test folders are made with their own
seeds, so no scan of them was seen in training nor in the validation that selected the best
checkpoint: they are the test split. ``--checkpoint`` adds existing checkpoints (the shipped
demo, say) as rows without training; given alone, nothing is trained.

Each row: test family, nodule recall with every candidate, candidates per scan (the detector's
list, at most ``--max-candidates``), the segmenter's components per scan before that cut, CPM
with its 95 % bootstrap interval, sensitivity at 4 FP per scan, and recall (every candidate)
per nodule kind and per slice-thickness band. The table also goes to ``OUT_DIR/cross_protocol.md``.

``--short`` is a smoke configuration (tiny scans, 2 epochs of 128 crops): it shows that the
pipeline runs, not what the detector can do.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
from _common import SLICE_BANDS_MM, band_label, nodule_key, nodule_kinds, scan_protocols

from src_train.evaluate import evaluate_froc, read_series_list, read_submission
from src_train.infer.records import read_record
from src_train.luna import LunaFolder
from src_train.records.truth import scoring_truth
from src_train.synth.protocols import FAMILY_NAMES

#: Seeds of the test folders (one per family, far from any training seed).
TEST_SEED = 90_000
TRAIN_SEED = 70_000


def _run(command: list[str]) -> None:
    """Run a ``lunaseg`` command in this interpreter's environment; stop on failure."""
    print("$ lunaseg " + " ".join(command), file=sys.stderr)
    subprocess.run([sys.executable, "-m", "src_train.cli", *command], check=True)


def _synth(out: Path, family: str, scans: int, seed: int, short: bool) -> Path:
    args = ["synth", str(out), "--scans", str(scans), "--seed", str(seed), "--protocol", family]
    _run(args + (["--tiny"] if short else []))
    return out


def _score(data: Path, infer_out: Path) -> dict[str, str]:
    """One table row's figures for an ``lunaseg infer`` output on a synthetic folder."""
    folder = LunaFolder(data)
    truth = scoring_truth(folder)
    uids = read_series_list(infer_out / "seriesuids.csv")
    marks = read_submission(infer_out / "candidates.csv")
    froc = evaluate_froc(truth.nodules_of(uids), marks, series_uids=uids, bootstrap=500, seed=0)
    kinds = nodule_kinds(folder, uids)
    protocols = scan_protocols(folder)  # the slice spacing each scan was drawn with
    by_kind: dict[str, list[bool]] = defaultdict(list)
    by_band: dict[str, list[bool]] = defaultdict(list)
    for nodule, found in zip(froc.nodules, froc.nodule_found, strict=True):
        by_kind[kinds.get(nodule_key(nodule.series_uid, nodule.center_xyz_mm), "?")].append(
            bool(found)
        )
        spacing = protocols.get(nodule.series_uid, {}).get("slice_spacing_mm")
        if spacing is not None:
            by_band[band_label(float(spacing), SLICE_BANDS_MM)].append(bool(found))
    boot = froc.bootstrap
    interval = f" ({boot.cpm_lower:.2f}-{boot.cpm_upper:.2f})" if boot else ""
    rates = list(froc.fp_rates)
    at4 = froc.sensitivity_at_rates[rates.index(4.0)] if 4.0 in rates else float("nan")

    def recall(groups: dict[str, list[bool]]) -> str:
        return ", ".join(f"{k} {sum(v)}/{len(v)}" for k, v in sorted(groups.items()))

    records = [read_record(infer_out, uid) for uid in uids]
    found = [r.components for r in records if r is not None]
    return {
        "recall": f"{froc.recall:.3f} ({froc.n_detected}/{froc.n_nodules})",
        "candidates/scan": f"{froc.candidates_per_scan:.1f}",
        "segmenter components/scan": f"{np.mean(found):.1f}" if found else "?",
        "CPM (95% CI)": f"{froc.cpm:.3f}{interval}",
        "sens. @4 FP": f"{at4:.3f}",
        "recall by kind": recall(by_kind),
        "recall by slice mm": recall(by_band),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="working folder (data, runs, the table)")
    parser.add_argument("--short", action="store_true", help="smoke configuration (minutes)")
    parser.add_argument(
        "--train",
        action="append",
        metavar="NAME=FAMILY",
        help="a training set: name=family (default: all=mixed and thick=thick)",
    )
    parser.add_argument("--checkpoint", action="append", default=[], type=Path)
    parser.add_argument("--train-scans", type=int, help="scans per training folder")
    parser.add_argument("--test-scans", type=int, help="scans per test folder")
    parser.add_argument("--train-args", default="", help="extra 'lunaseg train' options")
    args = parser.parse_args()

    short = args.short
    train_scans = args.train_scans or (8 if short else 60)
    test_scans = args.test_scans or (2 if short else 8)
    default_sets = [] if args.checkpoint else ["all=mixed", "thick=thick"]
    sets = dict(s.split("=", 1) for s in (args.train or default_sets))
    models: dict[str, Path] = {p.stem: p for p in args.checkpoint}
    for name, family in sets.items():
        data = _synth(args.out / "data" / f"train-{name}", family, train_scans, TRAIN_SEED, short)
        run_dir = args.out / "runs" / name
        train = ["train", str(data), "--run-dir", str(run_dir), "--overwrite"]
        train += ["--epochs", "2", "--epoch-samples", "128", "--val-every", "1"] if short else []
        train += args.train_args.split()
        _run(train)
        models[name] = run_dir / "checkpoint_best.pt"

    rows = []
    for k, family in enumerate(FAMILY_NAMES):
        test = _synth(
            args.out / "data" / f"test-{family}", family, test_scans, TEST_SEED + k, short
        )
        for name, checkpoint in models.items():
            infer_out = args.out / "infer" / f"{name}-on-{family}"
            _run(
                [
                    "infer",
                    str(test),
                    "--out",
                    str(infer_out),
                    "--checkpoint",
                    str(checkpoint),
                    "--overwrite",
                ]
            )
            rows.append({"model": name, "test family": family, **_score(test, infer_out)})

    head = list(rows[0]) if rows else []
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row[h] for h in head) + " |" for row in rows]
    table = "\n".join(lines)
    (args.out / "cross_protocol.md").write_text(table + "\n", encoding="utf-8")
    print(table)
    if rows:
        cpm = defaultdict(list)
        for row in rows:
            cpm[row["model"]].append(float(row["CPM (95% CI)"].split()[0]))
        for name, values in cpm.items():
            print(f"\n{name}: mean CPM over families {np.mean(values):.3f}")


if __name__ == "__main__":
    main()

"""The issue's goals table for one ``lunaseg infer`` run on a synthetic folder (or several
runs pooled as one set).

Reads the run's ``candidates.csv`` and ``seriesuids.csv`` and the folder's ``annotations.csv``
(+ ``annotations_excluded.csv``) and ``truth/nodules.csv`` (each nodule's kind), scores them with
the official LUNA16 rules (:func:`src_train.evaluate.evaluate_froc`, bootstrap over scans for
the CPM interval) and prints, in Markdown:

* nodule recall with every candidate, candidates per scan (and, from the run's series records,
  the segmenter's components per scan before the detector's ``--max-candidates`` cut), FP per
  scan at 90 % and 95 %
  sensitivity, the sensitivities at 1/8..8 FP per scan, CPM with its 95 % interval;
* the operating point at ``--fp-per-scan`` (default 4): the score threshold that keeps at most
  that many false positives per scan, and recall there per nodule kind, per size band and, for
  a folder ``lunaseg synth`` wrote, per protocol family and slice-thickness band (the scans'
  drawn protocols in its ``lunaseg-synth.json``);
  With the true shapes (``truth/<uid>.mhd``) also per *dense surround*: the share of the
  voxels within 2 mm of the nodule's true shape above -500 HU in the scan
  (:func:`src_train.masks.dense_surround`: 0 for a nodule with lung all round, about a third
  for a juxtapleural one, most for one inside a vessel bundle; read on each nodule's box, about
  0.2 s per scan);
* the nodules missed at that operating point: series, kind, diameter, family, slice spacing,
  dense surround, and the detector's best score on the nodule (none: no candidate on it).

Example::

    lunaseg infer /tmp/q/eval8128 --out /tmp/q/out --checkpoint demo.pt
    python benchmarks/detection_report.py /tmp/q/eval8128 /tmp/q/out/candidates.csv

Further ``DATA CANDIDATES`` pairs are pooled with the first: one FROC over all their series
(the bootstrap resamples scans of every folder), one operating point, the tables summed (e.g.
one folder per protocol family).
"""

from __future__ import annotations

import argparse
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from _common import (
    SLICE_BANDS_MM,
    NoduleKey,
    band_label,
    nodule_key,
    nodule_kinds,
    operating_cut,
    scan_protocols,
)

from src_train.errors import LunaSegError
from src_train.evaluate import (
    Candidate,
    evaluate_froc,
    find_series_list,
    read_series_list,
    read_submission,
)
from src_train.infer.records import SeriesRecord, read_record
from src_train.luna import LunaFolder
from src_train.masks import load_series_truth
from src_train.records.truth import ScoringTruth, scoring_truth

#: Size bands (mm, lower bound inclusive) of the per-size table.
SIZE_BANDS_MM = ((0.0, 6.0), (6.0, 10.0), (10.0, 20.0), (20.0, math.inf))
#: Dense-surround bands (share, lower bound inclusive) of the per-surround table.
SURROUND_BANDS = ((0.0, 0.1), (0.1, 0.25), (0.25, 0.5), (0.5, math.inf))
#: Missed nodules listed at the most.
MISSED_LISTED = 30


@dataclass
class Pooled:
    """One or more ``lunaseg infer`` runs scored as one set (series UIDs must not repeat)."""

    truth: ScoringTruth = field(default_factory=ScoringTruth)
    uids: list[str] = field(default_factory=list)
    marks: list[Candidate] = field(default_factory=list)
    kinds: dict[NoduleKey, str] = field(default_factory=dict)
    protocols: dict[str, dict] = field(default_factory=dict)  # type: ignore[type-arg]
    surround: dict[NoduleKey, float] = field(default_factory=dict)
    records: list[SeriesRecord | None] = field(default_factory=list)

    def add(self, data: str, candidates: Path) -> None:
        """The run whose ``candidates.csv`` is ``candidates``, on the folder ``data``."""
        folder = LunaFolder(data)
        truth = scoring_truth(folder)
        series_path = find_series_list(candidates)
        uids = read_series_list(series_path) if series_path else folder.series_uids
        repeated = sorted(set(uids) & set(self.uids))
        if repeated:
            raise LunaSegError(
                f"{candidates}: {len(repeated)} series were scored by an earlier run already "
                f"(e.g. {repeated[0]}); pool runs on different series."
            )
        wanted = set(uids)
        self.uids.extend(uids)
        self.truth.pool(truth, uids)
        self.marks.extend(m for m in read_submission(candidates) if m.series_uid in wanted)
        self.kinds.update(nodule_kinds(folder, uids))
        self.protocols.update(scan_protocols(folder))
        self.surround.update(_dense_surrounds(folder, uids))
        self.records.extend(read_record(candidates.parent, uid) for uid in uids)


def _dense_surrounds(folder: LunaFolder, uids: list[str]) -> dict[NoduleKey, float]:
    """Each true nodule's dense surround (:func:`dense_surround`) in the series ``uids`` that
    have a truth volume (none: an empty mapping)."""
    out: dict[NoduleKey, float] = {}
    for uid in uids:
        if folder.truth_path(uid) is None or not folder.true_nodules(uid):
            continue  # nothing to measure: the scan is not read
        ct = folder.load(uid)
        series = load_series_truth(folder, ct)
        if series is None:
            continue
        for nodule, _annotation in series.pairs:
            out[nodule_key(uid, nodule.center_xyz_mm)] = series.dense_surround(ct, nodule)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", help="the synthetic folder (annotations, truth/nodules.csv)")
    parser.add_argument("candidates", type=Path, help="candidates.csv of a lunaseg infer run")
    parser.add_argument(
        "more",
        nargs="*",
        metavar="DATA CANDIDATES",
        help="further folder and candidates.csv pairs, pooled with the first as one set",
    )
    parser.add_argument("--fp-per-scan", type=float, default=4.0)
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if len(args.more) % 2:
        parser.error("further runs come in pairs: DATA CANDIDATES")
    pooled = Pooled()
    pooled.add(args.data, args.candidates)
    for data, candidates in zip(args.more[::2], args.more[1::2], strict=True):
        pooled.add(data, Path(candidates))
    truth, uids, marks = pooled.truth, pooled.uids, pooled.marks
    froc = evaluate_froc(
        truth.nodules_of(uids),
        marks,
        excluded=truth.excluded,
        series_uids=uids,
        bootstrap=args.bootstrap,
        seed=args.seed,
    )
    boot = froc.bootstrap
    interval = f" (95% CI {boot.cpm_lower:.3f}-{boot.cpm_upper:.3f})" if boot else ""
    sens = ", ".join(f"{v:.3f}" for v in froc.sensitivity_at_rates)
    print(f"{froc.n_scans} scans, {froc.n_nodules} nodules, {froc.n_excluded} excluded findings\n")
    print("| figure | value |\n|---|---|")
    found_all = f"{froc.recall:.3f} ({froc.n_detected}/{froc.n_nodules})"
    print(f"| nodule recall (every candidate) | {found_all} |")
    print(f"| candidates per scan | {froc.candidates_per_scan:.1f} |")
    records = pooled.records
    found = [r.components for r in records if r is not None]
    if found and any(r is not None and r.left_out for r in records):
        print(f"| segmenter components per scan (before --max-candidates) | {np.mean(found):.1f} |")
    for target in (0.9, 0.95):
        fps = froc.fps_per_scan_at(target)
        print(
            f"| FP/scan at {target:.0%} sensitivity | "
            + (f"{fps:.2f} |" if math.isfinite(fps) else "not reached |")
        )
    print(f"| sensitivity at 1/8, 1/4, 1/2, 1, 2, 4, 8 FP/scan | {sens} |")
    print(f"| CPM | **{froc.cpm:.3f}**{interval} |")

    # Operating point: the threshold above which at most fp_per_scan false positives per scan.
    cut, n_fp = operating_cut(marks, truth, uids, args.fp_per_scan)
    found = np.nan_to_num(froc.nodule_probability, nan=-math.inf) > cut
    kinds, protocols = pooled.kinds, pooled.protocols
    groups: dict[str, dict[str, list[tuple[bool, bool]]]] = {
        name: defaultdict(list)
        for name in ("nodule kind", "size band", "family", "slice mm", "dense surround")
    }
    missed = []
    for i, (nodule, hit, anywhere) in enumerate(
        zip(froc.nodules, found, froc.nodule_found, strict=True)
    ):
        pair = (bool(hit), bool(anywhere))
        kind = kinds.get(nodule_key(nodule.series_uid, nodule.center_xyz_mm), "?")
        protocol = protocols.get(nodule.series_uid, {})
        groups["nodule kind"][kind].append(pair)
        size = band_label(float(nodule.diameter_mm or 0.0), SIZE_BANDS_MM)
        groups["size band"][size].append(pair)
        if protocol:
            groups["family"][str(protocol.get("family", "?"))].append(pair)
            spacing = float(protocol.get("slice_spacing_mm", math.nan))
            groups["slice mm"][band_label(spacing, SLICE_BANDS_MM)].append(pair)
        share = pooled.surround.get(nodule_key(nodule.series_uid, nodule.center_xyz_mm))
        if share is not None:
            groups["dense surround"][band_label(share, SURROUND_BANDS, "")].append(pair)
        if not hit:
            missed.append((i, nodule, kind, protocol, share))
    print(
        f"\nAt <= {args.fp_per_scan:g} FP/scan (score > {cut:.4f}: "
        f"{n_fp / froc.n_scans:.2f} FP/scan): "
        f"recall {found.mean():.3f} ({int(found.sum())}/{len(found)})\n"
    )
    head = f"recall at <= {args.fp_per_scan:g} FP/scan | recall, every candidate |"
    order = {
        "size band": [band_label(lo, SIZE_BANDS_MM) for lo, _hi in SIZE_BANDS_MM],
        "slice mm": [band_label(lo, SLICE_BANDS_MM) for lo, _hi in SLICE_BANDS_MM],
        "dense surround": [band_label(lo, SURROUND_BANDS, "") for lo, _hi in SURROUND_BANDS]
        + ["?"],
    }
    for title, by_group in groups.items():
        if not by_group:
            continue
        print(f"| {title} | {head}\n|---|---|---|")
        for name in order.get(title, sorted(by_group)):
            if by_group.get(name):
                print(f"| {name} | {_recall(by_group[name])} |")
        print()
    _print_missed(missed, froc.nodule_probability, args.fp_per_scan)


def _print_missed(missed: list, probability: np.ndarray, fp_per_scan: float) -> None:  # type: ignore[type-arg]
    """The nodules missed at the operating point, best-scored first."""
    if not missed:
        return
    print(f"Missed at <= {fp_per_scan:g} FP/scan ({len(missed)}):\n")
    print("| series | kind | diameter mm | family | slice mm | dense surround | best score on it |")
    print("|---|---|---|---|---|---|---|")
    missed.sort(key=lambda m: -np.nan_to_num(probability[m[0]], nan=-1.0))
    for i, nodule, kind, protocol, share in missed[:MISSED_LISTED]:
        score = probability[i]
        spacing = protocol.get("slice_spacing_mm")
        print(
            f"| ...{nodule.series_uid[-8:]} | {kind} | {float(nodule.diameter_mm or 0):.1f} | "
            f"{protocol.get('family', '?')} | "
            + (f"{float(spacing):.2f}" if spacing is not None else "?")
            + " | "
            + ("?" if share is None or math.isnan(share) else f"{share:.2f}")
            + " | "
            + ("none" if np.isnan(score) else f"{score:.3f}")
            + " |"
        )
    if len(missed) > MISSED_LISTED:
        print(f"\n... and {len(missed) - MISSED_LISTED} more")


def _recall(pairs: list[tuple[bool, bool]]) -> str:
    """``recall at the operating point | recall with every candidate`` as table cells."""
    cells = []
    for k in (0, 1):
        hits = sum(p[k] for p in pairs)
        cells.append(f"{hits / len(pairs):.3f} ({hits}/{len(pairs)})")
    return " | ".join(cells)


if __name__ == "__main__":
    try:
        main()
    except LunaSegError as error:  # a bad folder or file: its message, not a traceback
        raise SystemExit(f"error: {error}") from None

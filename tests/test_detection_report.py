"""benchmarks/detection_report.py: the tables it groups nodules into and the missed list, on a
hand-made submission for the tiny synthetic folder (what each row must say is known)."""

from __future__ import annotations

import csv
import runpy
import sys
from pathlib import Path

import pytest

from src_train.luna import LunaFolder

REPORT = Path(__file__).resolve().parents[1] / "benchmarks" / "detection_report.py"


@pytest.fixture(autouse=True)
def benchmarks_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """As ``python benchmarks/detection_report.py`` runs it: its folder first on sys.path."""
    monkeypatch.syspath_prepend(str(REPORT.parent))


def _report(data: Path, candidates: Path, capsys: pytest.CaptureFixture[str], *more: Path) -> str:
    argv = sys.argv
    sys.argv = [str(REPORT), str(data), str(candidates), *map(str, more), "--bootstrap", "0"]
    try:
        runpy.run_path(str(REPORT), run_name="__main__")
    finally:
        sys.argv = argv
    return capsys.readouterr().out


def _write_run(out: Path, rows: list[list[object]], uids: list[str]) -> Path:
    """A ``lunaseg infer`` output folder holding ``rows`` as candidates of the series ``uids``."""
    out.mkdir()
    with (out / "candidates.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["seriesuid", "coordX", "coordY", "coordZ", "probability"])
        writer.writerows(rows)
    (out / "seriesuids.csv").write_text("\n".join(uids) + "\n")
    return out / "candidates.csv"


def _hand_made_rows(folder: LunaFolder) -> tuple[list[list[object]], list]:  # type: ignore[type-arg]
    """Every true nodule marked at 0.9 but one at 0.05 and one unmarked, and 5 false positives
    per scan far outside the body; returns the rows and the nodules."""
    nodules = [n for uid in folder.series_uids for n in folder.true_nodules(uid)]
    assert len(nodules) >= 4
    low, unmarked = nodules[0], nodules[1]
    rows: list[list[object]] = [
        [n.series_uid, *n.center_xyz_mm, 0.05 if n is low else 0.9]
        for n in nodules
        if n is not unmarked
    ]
    for uid in folder.series_uids:
        rows += [[uid, 9000.0 + k, 9000.0, 9000.0, 0.5] for k in range(5)]
    return rows, nodules


def test_report_groups_by_family_and_slice_and_lists_each_missed_nodule(
    tiny_synth_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = LunaFolder(tiny_synth_dir)
    # every nodule marked except two: one with a low score below four false positives per scan
    # (so missed at 4 FP/scan but found with every candidate), one not marked at all
    rows, nodules = _hand_made_rows(folder)
    low, unmarked = nodules[0], nodules[1]
    candidates = _write_run(tmp_path / "infer", rows, folder.series_uids)

    text = _report(tiny_synth_dir, candidates, capsys)

    n = len(nodules)
    assert f"| nodule recall (every candidate) | {(n - 1) / n:.3f} ({n - 1}/{n}) |" in text
    assert f"recall {(n - 2) / n:.3f} ({n - 2}/{n})" in text  # the operating point at 4 FP
    assert "| nodule kind |" in text and "| size band |" in text
    # the tiny scans are drawn from the generator's own ranges ("custom"), 2-2.5 mm slices
    assert f"| custom | {(n - 2) / n:.3f} ({n - 2}/{n}) | {(n - 1) / n:.3f} ({n - 1}/{n}) |" in text
    assert f"| >= 2 mm | {(n - 2) / n:.3f} ({n - 2}/{n}) |" in text
    missed = text.split("Missed at <= 4 FP/scan (2):")[1]
    lines = [line for line in missed.splitlines() if line.startswith("| ...")]
    assert len(lines) == 2
    assert lines[0].startswith(f"| ...{low.series_uid[-8:]} | {low.kind} |")
    assert lines[0].endswith("| 0.050 |")  # the best-scored miss first
    assert lines[1].startswith(f"| ...{unmarked.series_uid[-8:]} | {unmarked.kind} |")
    assert lines[1].endswith("| none |")


def test_report_groups_by_dense_surround_of_the_true_shapes(
    tiny_synth_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from src_train.masks import load_series_truth

    folder = LunaFolder(tiny_synth_dir)
    rows, nodules = _hand_made_rows(folder)
    unmarked = nodules[1]
    candidates = _write_run(tmp_path / "infer", rows, folder.series_uids)
    ct = folder.load(unmarked.series_uid)
    series = load_series_truth(folder, ct)
    assert series is not None
    share = series.dense_surround(ct, unmarked)
    assert 0.0 <= share <= 1.0

    text = _report(tiny_synth_dir, candidates, capsys)

    table = text.split("| dense surround |")[1].split("\n\n")[0]
    counts = [int(line.rsplit("/", 1)[1].split(")")[0]) for line in table.splitlines()[2:]]
    assert sum(counts) == len(nodules)  # every nodule in one band
    band = next(
        f"| {lo:g}-{hi:g} |" if hi < 1 else f"| >= {lo:g} |"
        for lo, hi in ((0.0, 0.1), (0.1, 0.25), (0.25, 0.5), (0.5, 2.0))
        if lo <= share < hi
    )
    assert band in table
    missed = [
        line for line in text.splitlines() if line.startswith(f"| ...{unmarked.series_uid[-8:]}")
    ]
    assert any(line.endswith(f"| {share:.2f} | none |") for line in missed)


def test_report_of_a_family_folder_has_family_and_slice_tables(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from src_train.synth import SynthConfig, write_dataset

    data = tmp_path / "thick"
    write_dataset(data, n_scans=2, seed=3, config=SynthConfig.tiny(protocol="thick"))
    folder = LunaFolder(data)
    rows = [
        [uid, *n.center_xyz_mm, 0.9] for uid in folder.series_uids for n in folder.true_nodules(uid)
    ]
    candidates = _write_run(tmp_path / "infer", rows, folder.series_uids)
    n = len(rows)

    text = _report(data, candidates, capsys)

    assert f"| thick | 1.000 ({n}/{n}) | 1.000 ({n}/{n}) |" in text
    assert f"| >= 2 mm | 1.000 ({n}/{n}) | 1.000 ({n}/{n}) |" in text  # thick: 2-3 mm slices
    assert "Missed" not in text


def test_runs_pooled_report_what_one_run_over_their_series_reports(
    tiny_synth_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = LunaFolder(tiny_synth_dir)
    uids = folder.series_uids
    rows, _nodules = _hand_made_rows(folder)
    whole = _write_run(tmp_path / "all", rows, uids)
    halves = [
        _write_run(tmp_path / name, [r for r in rows if r[0] in part], part)
        for name, part in (("a", uids[:2]), ("b", uids[2:]))
    ]

    one = _report(tiny_synth_dir, whole, capsys)
    pooled = _report(tiny_synth_dir, halves[0], capsys, tiny_synth_dir, halves[1])

    assert pooled == one and f"{len(uids)} scans" in one
    with pytest.raises(SystemExit, match="were scored by an earlier run already"):
        _report(tiny_synth_dir, whole, capsys, tiny_synth_dir, halves[1])


def test_a_missing_folder_or_candidates_file_is_one_error_line(
    tiny_synth_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(SystemExit, match=r"error: Data folder .*nowhere does not exist"):
        _report(missing, tmp_path / "candidates.csv", capsys)
    with pytest.raises(SystemExit, match=r"error: .*candidates\.csv does not exist"):
        _report(tiny_synth_dir, missing / "candidates.csv", capsys)


def test_false_positives_follow_luna16s_counting_with_excluded_findings() -> None:
    from _common import false_positive_probabilities, operating_cut

    from src_train.evaluate import MAX_MARKS_PER_SCAN, Candidate
    from src_train.luna import Nodule
    from src_train.records.truth import ScoringTruth

    nodule = Nodule("a", (0.0, 0.0, 0.0), 10.0)
    ignored = Nodule("a", (50.0, 0.0, 0.0), 10.0, is_nodule=False)
    truth = ScoringTruth(nodules={"a": [nodule]}, excluded=[ignored])
    marks = [
        Candidate("a", (1.0, 0.0, 0.0), 0.9),  # on the nodule (within its radius)
        Candidate("a", (52.0, 0.0, 0.0), 0.8),  # on the excluded finding: not counted
        Candidate("a", (100.0, 0.0, 0.0), 0.7),  # false positives
        Candidate("a", (0.0, 100.0, 0.0), 0.6),
        Candidate("b", (0.0, 0.0, 0.0), 0.5),  # scan b has no nodule
    ]
    fp = false_positive_probabilities(marks, truth, ["a", "b"])
    assert sorted(fp.tolist()) == [0.5, 0.6, 0.7]
    # at 1 FP per scan (2 scans): the two most probable false positives stay above the cut
    assert operating_cut(marks, truth, ["a", "b"], 1.0) == (0.5, 2)
    # beyond the per-scan cap only the most probable marks count
    many = [Candidate("b", (float(k), 500.0, 0.0), 1.0 - k / 1000) for k in range(200)]
    assert len(false_positive_probabilities(many, truth, ["b"])) == MAX_MARKS_PER_SCAN

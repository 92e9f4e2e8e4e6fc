"""LUNA16-style scoring on hand-made cases whose answers are known."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from src_train.atomic import write_text_atomic
from src_train.errors import AnnotationError, OutputExistsError
from src_train.evaluate import (
    EXCLUDED_FALLBACK_DIAMETER_MM,
    FROC_FP_RATES,
    Candidate,
    evaluate_froc,
    plot_froc,
    read_excluded,
    read_series_list,
    read_submission,
    write_froc_csv,
)
from src_train.luna import Nodule


def nod(uid: str, xyz: tuple[float, float, float], d: float | None = 10.0) -> Nodule:
    return Nodule(series_uid=uid, center_xyz_mm=xyz, diameter_mm=d)


def cand(uid: str, xyz: tuple[float, float, float], p: float) -> Candidate:
    return Candidate(series_uid=uid, center_xyz_mm=xyz, probability=p)


def test_hit_is_strictly_inside_the_radius() -> None:
    nodules = [nod("a", (10.0, 20.0, 30.0), d=10.0)]
    on_radius = evaluate_froc(nodules, [cand("a", (13.0, 24.0, 30.0), 0.9)])  # distance 5.0
    assert on_radius.n_detected == 0
    assert on_radius.n_false_positives == 1
    inside = evaluate_froc(nodules, [cand("a", (13.0, 23.99, 30.0), 0.9)])
    assert inside.n_detected == 1
    assert inside.n_false_positives == 0
    assert inside.recall == 1.0


def test_duplicates_count_once_with_the_best_probability() -> None:
    nodules = [nod("a", (0.0, 0.0, 0.0)), nod("a", (50.0, 0.0, 0.0))]
    cands = [
        cand("a", (1.0, 0.0, 0.0), 0.6),
        cand("a", (0.0, 1.0, 0.0), 0.9),
        cand("a", (0.0, 0.0, 1.0), 0.3),
    ]
    res = evaluate_froc(nodules, cands)
    assert res.n_false_positives == 0
    assert res.n_detected == 1
    np.testing.assert_array_equal(res.nodule_probability[0], 0.9)
    assert math.isnan(res.nodule_probability[1])
    # No false positives at all: every operating point has the final sensitivity.
    np.testing.assert_allclose(res.sensitivity_at_rates, 0.5)
    assert res.cpm == pytest.approx(0.5)


def test_candidate_between_two_nodules_hits_both() -> None:
    nodules = [nod("a", (0.0, 0.0, 0.0), 10.0), nod("a", (6.0, 0.0, 0.0), 10.0)]
    res = evaluate_froc(nodules, [cand("a", (3.0, 0.0, 0.0), 0.7)])
    assert res.n_detected == 2
    assert res.recall == 1.0


def test_marks_on_excluded_findings_are_ignored() -> None:
    nodules = [nod("a", (0.0, 0.0, 0.0))]
    excluded = [nod("a", (100.0, 0.0, 0.0), 4.0), nod("a", (200.0, 0.0, 0.0), -1.0)]
    cands = [
        cand("a", (101.0, 0.0, 0.0), 0.99),  # inside excluded (r = 2)
        cand("a", (200.0 + EXCLUDED_FALLBACK_DIAMETER_MM / 2 - 0.1, 0.0, 0.0), 0.98),
        cand("a", (103.0, 0.0, 0.0), 0.97),  # outside the excluded radius: false positive
        cand("a", (0.0, 0.0, 0.0), 0.5),
    ]
    res = evaluate_froc(nodules, cands, excluded=excluded)
    assert res.n_ignored == 2
    assert res.n_false_positives == 1
    assert res.n_excluded == 2
    # One FP (prob 0.97) ranks above the nodule: sensitivity 0 below 1 FP/scan, 1 from 1 on.
    expected = [0.0 if r < 1 else 1.0 for r in FROC_FP_RATES]
    np.testing.assert_allclose(res.sensitivity_at_rates, expected)


def test_known_froc_curve_and_cpm() -> None:
    nodules = [
        nod("a", (0.0, 0.0, 0.0)),
        nod("a", (40.0, 0.0, 0.0)),
        nod("b", (0.0, 0.0, 0.0)),
        nod("b", (40.0, 0.0, 0.0)),
    ]
    far = (500.0, 500.0, 500.0)
    cands = [
        cand("a", (0.0, 0.0, 0.0), 0.9),
        cand("a", far, 0.8),
        cand("b", (0.0, 0.0, 0.0), 0.7),
        cand("b", far, 0.5),
        cand("a", far, 0.4),
        cand("b", (40.0, 0.0, 0.0), 0.3),
        cand("b", far, 0.2),
    ]
    res = evaluate_froc(nodules, cands)
    # TP 0.9 | FP 0.8 | TP 0.7 | FP 0.5 | FP 0.4 | TP 0.3 | FP 0.2, over 2 scans and 4 nodules.
    np.testing.assert_allclose(res.fps_per_scan, [0, 0, 0.5, 0.5, 1.0, 1.5, 1.5, 2.0])
    np.testing.assert_allclose(res.sensitivity, [0, 0.25, 0.25, 0.5, 0.5, 0.5, 0.75, 0.75])
    np.testing.assert_allclose(res.sensitivity_at_rates, [0.25, 0.25, 0.5, 0.5, 0.75, 0.75, 0.75])
    assert res.cpm == pytest.approx(3.75 / 7)
    assert res.recall == pytest.approx(0.75)
    assert res.candidates_per_scan == pytest.approx(3.5)
    assert "CPM" in res.summary()


def test_scans_without_candidates_count_in_the_fp_rate() -> None:
    nodules = [nod("a", (0.0, 0.0, 0.0))]
    cands = [cand("a", (90.0, 0.0, 0.0), 0.9), cand("a", (0.0, 0.0, 0.0), 0.8)]
    two = evaluate_froc(nodules, cands)
    four = evaluate_froc(nodules, cands, series_uids=["a", "b", "c", "d"])
    assert two.n_scans == 1 and four.n_scans == 4
    assert four.fps_per_scan[-1] == pytest.approx(0.25)
    # With four scans the single FP costs 0.25 FP/scan, so the nodule is found at 1/4.
    assert two.sensitivity_at_rates[FROC_FP_RATES.index(0.25)] == 0.0
    assert four.sensitivity_at_rates[FROC_FP_RATES.index(0.25)] == 1.0
    empty = evaluate_froc(nodules, [], series_uids=["a", "b"])
    assert empty.recall == 0.0 and empty.cpm == 0.0 and empty.n_candidates == 0


def test_only_the_most_probable_marks_per_scan_count() -> None:
    nodules = [nod("a", (0.0, 0.0, 0.0))]
    cands = [cand("a", (100.0 + i, 0.0, 0.0), 0.9 - i * 0.01) for i in range(3)]
    cands.append(cand("a", (0.0, 0.0, 0.0), 0.1))
    capped = evaluate_froc(nodules, cands, max_marks_per_scan=3)
    assert capped.n_capped == 1 and capped.n_marks == 3
    assert capped.sensitivity[-1] == 0.0 and capped.cpm == 0.0  # the FROC sees 3 marks only
    assert capped.recall == 1.0  # plain recall: any submitted candidate
    assert evaluate_froc(nodules, cands).sensitivity[-1] == 1.0  # default cap is 100
    many = [cand("a", (100.0, float(i), 0.0), 0.5) for i in range(150)]
    default = evaluate_froc(nodules, [*many, cand("a", (0.0, 0.0, 0.0), 0.4)])
    assert default.n_marks == 100 and default.sensitivity[-1] == 0.0


def test_nodule_without_diameter_is_an_error() -> None:
    with pytest.raises(AnnotationError, match="diameter"):
        evaluate_froc([nod("a", (0.0, 0.0, 0.0), None)], [cand("a", (0.0, 0.0, 0.0), 0.5)])


def test_read_submission_and_series_list(tmp_path: Path) -> None:
    good = tmp_path / "cands.csv"
    good.write_text(
        "seriesuid,coordX,coordY,coordZ,probability,diameter_mm\n"
        "s1,1.5,-2,3,0.75,6.0\n\ns2,0,0,0,0.1,4\n"
    )
    cands = read_submission(good)
    assert [c.series_uid for c in cands] == ["s1", "s2"]
    assert cands[0].center_xyz_mm == (1.5, -2.0, 3.0) and cands[0].probability == 0.75
    bad = tmp_path / "bad.csv"
    bad.write_text("seriesuid,coordX,coordY,coordZ,probability\ns1,1,2,x,0.5\n")
    with pytest.raises(AnnotationError, match="line 2"):
        read_submission(bad)
    wrong_header = tmp_path / "hdr.csv"
    wrong_header.write_text("seriesuid,coordX,coordY,coordZ,class\ns1,1,2,3,1\n")
    with pytest.raises(AnnotationError, match="header"):
        read_submission(wrong_header)
    with pytest.raises(AnnotationError, match="does not exist"):
        read_submission(tmp_path / "missing.csv")
    uids = tmp_path / "uids.csv"
    uids.write_text("seriesuid\ns1\ns2\n\n")
    assert read_series_list(uids) == ["s1", "s2"]


def test_curve_csv_and_plot_are_written_once(tmp_path: Path) -> None:
    res = evaluate_froc(
        [nod("a", (0.0, 0.0, 0.0))],
        [cand("a", (0.0, 0.0, 0.0), 0.8), cand("a", (50.0, 0.0, 0.0), 0.6)],
    )
    csv_path = write_froc_csv(res, tmp_path / "froc.csv")
    lines = csv_path.read_text().splitlines()
    assert lines[0] == "threshold,fps_per_scan,sensitivity"
    assert len(lines) == 1 + len(res.thresholds)
    png = plot_froc(res, tmp_path / "froc.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(OutputExistsError):
        write_froc_csv(res, csv_path)
    with pytest.raises(OutputExistsError):
        plot_froc(res, png)
    write_froc_csv(res, csv_path, overwrite=True)


def test_read_excluded_accepts_missing_diameters(tmp_path: Path) -> None:
    path = tmp_path / "annotations_excluded.csv"
    path.write_text(
        "seriesuid,coordX,coordY,coordZ,diameter_mm\ns1,0,0,0,-1\ns1,50,0,0,\ns1,90,0,0,4.5\n"
    )
    found = read_excluded(path)
    assert [f.diameter_mm for f in found] == [None, None, 4.5]
    assert all(not f.is_nodule for f in found)
    res = evaluate_froc([], [cand("s1", (4.0, 0.0, 0.0), 0.9)], excluded=found)
    assert res.n_ignored == 1 and res.n_false_positives == 0  # inside the 10 mm fallback
    bad = tmp_path / "bad.csv"
    bad.write_text("seriesuid,coordX,coordY,coordZ\ns1,a,0,0\n")
    with pytest.raises(AnnotationError, match="line 2"):
        read_excluded(bad)


def test_text_is_written_atomically_once(tmp_path: Path) -> None:
    path = write_text_atomic(tmp_path / "new" / "list.csv", "a\r\nb\n")
    assert path.read_bytes() == b"a\r\nb\n"  # written as given, parent folder created
    with pytest.raises(OutputExistsError, match=r"list\.csv"):
        write_text_atomic(path, "c\n")
    assert path.read_bytes() == b"a\r\nb\n"
    write_text_atomic(path, "c\n", overwrite=True)
    assert path.read_bytes() == b"c\n" and [p.name for p in path.parent.iterdir()] == ["list.csv"]

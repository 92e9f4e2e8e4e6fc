"""LUNA16 scoring on hand-made cases whose answers are computed by hand in the comments.

The rules are those of the official ``noduleCADEvaluationLUNA16.py``; the FROC curve math and
the bootstrap on their own are in ``test_evaluate_froc.py``.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pytest

from src_train.atomic import write_text_atomic
from src_train.errors import AnnotationError, ConfigError, OutputExistsError
from src_train.evaluate import (
    FROC_FP_RATES,
    Candidate,
    counted_marks,
    evaluate_froc,
    find_series_list,
    nodule_hits,
    nodule_recall,
    plot_froc,
    read_series_list,
    read_submission,
    write_froc_csv,
)
from src_train.luna import UNKNOWN_DIAMETER_MM, Nodule, find_excluded, read_excluded

FAR = (500.0, 500.0, 500.0)


def nod(uid: str, xyz: tuple[float, float, float], d: float | None = 10.0) -> Nodule:
    return Nodule(series_uid=uid, center_xyz_mm=xyz, diameter_mm=d)


def cand(uid: str, xyz: tuple[float, float, float], p: float) -> Candidate:
    return Candidate(series_uid=uid, center_xyz_mm=xyz, probability=p)


# ---------------------------------------------------------------------------------------------
# The hit rule
# ---------------------------------------------------------------------------------------------
def test_hit_is_strictly_inside_the_radius() -> None:
    nodules = [nod("a", (10.0, 20.0, 30.0), d=10.0)]
    # (3, 4, 0) from the center: squared distance 25 == radius squared: not a hit.
    on_radius = evaluate_froc(nodules, [cand("a", (13.0, 24.0, 30.0), 0.9)])
    assert on_radius.n_detected == 0 and on_radius.n_false_positives == 1
    inside = evaluate_froc(nodules, [cand("a", (13.0, 23.99, 30.0), 0.9)])
    assert inside.n_detected == 1 and inside.n_false_positives == 0 and inside.recall == 1.0


def test_nodule_hits_radius_rules() -> None:
    findings = [
        nod("a", (0.0, 0.0, 0.0), 8.0),  # radius 4
        nod("a", (100.0, 0.0, 0.0), -1.0),  # LUNA16's -1: 10 mm, radius 5
        nod("a", (200.0, 0.0, 0.0), 0.0),  # radius 0: nothing is strictly inside
    ]
    marks = [
        (3.99, 0.0, 0.0),
        (4.0, 0.0, 0.0),
        (104.99, 0.0, 0.0),
        (105.0, 0.0, 0.0),
        (200.0, 0.0, 0.0),
    ]
    expected = np.array(
        [
            [True, False, False],
            [False, False, False],
            [False, True, False],
            [False, False, False],
            [False, False, False],
        ]
    )
    np.testing.assert_array_equal(nodule_hits(marks, findings), expected)
    assert nodule_hits(np.zeros((0, 3)), findings).shape == (0, 3)
    # An unknown size (empty or LUNA16's -1) is one rule: 10 mm, for nodules and excluded alike.
    edge = np.array([[UNKNOWN_DIAMETER_MM / 2 - 0.01, 0, 0], [UNKNOWN_DIAMETER_MM / 2, 0, 0]])
    for diameter in (None, -1.0):
        hits = nodule_hits(edge, [nod("a", (0.0, 0.0, 0.0), diameter)])
        assert hits[:, 0].tolist() == [True, False]


def test_nodule_recall_counts_nodules_hit_by_any_candidate() -> None:
    nodules = [nod("a", (0.0, 0.0, 0.0)), nod("a", (6.0, 0.0, 0.0)), nod("a", (60.0, 0.0, 0.0))]
    # One mark at x=3 hits the first two (3 < 5 from both), nothing hits the third.
    assert nodule_recall(nodules, [(3.0, 0.0, 0.0), (30.0, 0.0, 0.0)]) == (2, 3)
    assert nodule_recall(nodules, []) == (0, 3)
    assert nodule_recall([], [(0.0, 0.0, 0.0)]) == (0, 0)


def test_duplicates_count_once_with_the_best_probability() -> None:
    nodules = [nod("a", (0.0, 0.0, 0.0)), nod("a", (50.0, 0.0, 0.0))]
    cands = [
        cand("a", (1.0, 0.0, 0.0), 0.6),
        cand("a", (0.0, 1.0, 0.0), 0.9),
        cand("a", (0.0, 0.0, 1.0), 0.3),
    ]
    res = evaluate_froc(nodules, cands)
    assert res.n_false_positives == 0 and res.n_duplicate_hits == 2
    assert res.n_detected == 1 and res.n_true_positives == 1
    assert res.nodule_probability[0] == 0.9
    assert math.isnan(res.nodule_probability[1])
    # No false positives at all: the script sets every FP rate to 0, so every reading is the
    # final sensitivity 1/2.
    np.testing.assert_array_equal(res.fps_per_scan, 0.0)
    np.testing.assert_allclose(res.sensitivity_at_rates, 0.5)
    assert res.cpm == pytest.approx(0.5)


def test_candidate_between_two_nodules_hits_both() -> None:
    nodules = [nod("a", (0.0, 0.0, 0.0), 10.0), nod("a", (6.0, 0.0, 0.0), 10.0)]
    res = evaluate_froc(nodules, [cand("a", (3.0, 0.0, 0.0), 0.7)])
    assert res.n_detected == 2 and res.n_true_positives == 2 and res.recall == 1.0
    assert res.n_false_positives == 0 and res.cpm == 1.0


def test_marks_on_excluded_findings_are_ignored() -> None:
    nodules = [nod("a", (0.0, 0.0, 0.0))]
    excluded = [
        nod("a", (100.0, 0.0, 0.0), 4.0),
        nod("a", (200.0, 0.0, 0.0), -1.0),
        nod("a", (300.0, 0.0, 0.0), 0.0),
        nod("a", (1.0, 0.0, 0.0), 4.0),  # overlaps the nodule
    ]
    cands = [
        cand("a", (101.0, 0.0, 0.0), 0.99),  # inside excluded (r = 2): ignored
        cand("a", (200.0 + UNKNOWN_DIAMETER_MM / 2 - 0.1, 0.0, 0.0), 0.98),  # ignored
        cand("a", (103.0, 0.0, 0.0), 0.97),  # outside the excluded radius: false positive
        cand("a", (300.0, 0.0, 0.0), 0.3),  # diameter 0 is hit by nothing: false positive
        cand("a", (0.5, 0.0, 0.0), 0.5),  # on the nodule and the excluded: a true positive
    ]
    res = evaluate_froc(nodules, cands, excluded=excluded)
    assert res.n_ignored == 2 and res.n_false_positives == 2 and res.n_excluded == 4
    assert res.n_true_positives == 1
    # One scan. FP 0.97 | TP 0.5 | FP 0.3. Counts (tp, fp) = (0,1), (1,1), (1,2): none dropped.
    # Points: (0, 0), (1, 0), (1, 1), (2, 1). The grid point read for "1 FP/scan" is 0.9999125,
    # just left of the vertical step at 1, so the official reading there is still 0.
    np.testing.assert_allclose(res.fps_per_scan, [0, 1, 1, 2])
    np.testing.assert_allclose(res.sensitivity, [0, 0, 1, 1])
    np.testing.assert_allclose(res.sensitivity_at_rates, [0, 0, 0, 0, 1, 1, 1])
    assert res.cpm == pytest.approx(3 / 7)


def test_interpolated_cpm_differs_from_the_step_rule() -> None:
    """3 scans, 4 nodules, 8 marks; the official CPM computed by hand.

    Nodules a1, a2 (scan a), b1 (b), c1 (c), all 10 mm. Marks, probability descending:
      0.9 a on a1 (TP) | 0.8 b on b1 (TP) | 0.8 b FP | 0.7 c FP | 0.6 a FP | 0.6 c on c1 (TP)
      | 0.3 a on a1 again (duplicate: ignored) | 0.2 b FP.   a2 is missed.
    Detected 3 of 4 nodules; 4 false positives on 3 scans.
    Cumulative (tp, fp) per distinct threshold 0.9, 0.8, 0.7, 0.6, 0.2:
      (1,0) (2,1) (2,2) (3,3) (3,4); second differences are never both 0, so no point drops.
    Points (fps/scan, sens): (0,0) (0,.25) (1/3,.5) (2/3,.5) (1,.75) (4/3,.75).
    Read by linear interpolation at the grid points nearest the rates:
      0.125     on (0,.25)-(1/3,.5):  .25 + 0.125 * 3 * .25           = 0.34375
      0.2502125 same segment:         .25 + 0.2502125 * 3 * .25       = 0.437659375
      0.49985   on (1/3,.5)-(2/3,.5):                                   0.5
      0.9999125 on (2/3,.5)-(1,.75):  .5 + (0.9999125 - 2/3) * 3 * .25 = 0.749934375
      2.0000375, 4.0002875, 8         beyond the last point:            0.75 each
    CPM = (0.34375 + 0.437659375 + 0.5 + 0.749934375 + 3 * 0.75) / 7 = 4.28134375 / 7.
    The old step rule (best sensitivity at <= r FP/scan) read .25 .25 .5 .75 .75 .75 .75 = 4/7.
    """
    nodules = [
        nod("a", (0.0, 0.0, 0.0)),
        nod("a", (40.0, 0.0, 0.0)),
        nod("b", (0.0, 0.0, 0.0)),
        nod("c", (0.0, 0.0, 0.0)),
    ]
    cands = [
        cand("a", (0.0, 0.0, 0.0), 0.9),
        cand("b", (1.0, 0.0, 0.0), 0.8),
        cand("b", FAR, 0.8),
        cand("c", FAR, 0.7),
        cand("a", FAR, 0.6),
        cand("c", (0.0, 2.0, 0.0), 0.6),
        cand("a", (0.0, 0.0, 3.0), 0.3),
        cand("b", (-FAR[0], 0.0, 0.0), 0.2),
    ]
    res = evaluate_froc(nodules, cands)
    assert (res.n_true_positives, res.n_false_positives, res.n_duplicate_hits) == (3, 4, 1)
    np.testing.assert_allclose(res.thresholds, [np.inf, 0.9, 0.8, 0.7, 0.6, 0.2])
    np.testing.assert_allclose(res.fps_per_scan, [0, 0, 1 / 3, 2 / 3, 1, 4 / 3])
    np.testing.assert_allclose(res.sensitivity, [0, 0.25, 0.5, 0.5, 0.75, 0.75])
    expected = [0.34375, 0.437659375, 0.5, 0.749934375, 0.75, 0.75, 0.75]
    np.testing.assert_allclose(res.sensitivity_at_rates, expected, rtol=0, atol=1e-12)
    assert res.cpm == pytest.approx(4.28134375 / 7, abs=1e-12)
    assert res.cpm != pytest.approx(4 / 7, abs=1e-3)
    assert res.recall == 0.75 and res.candidates_per_scan == pytest.approx(8 / 3)
    # FP per scan to reach a sensitivity, on the same straight segments:
    # .5 on (0,.25)-(1/3,.5) -> 1/3; .6 on (2/3,.5)-(1,.75) -> 2/3 + .4/3 = 0.8; .75 -> 1.
    assert res.fps_per_scan_at(0.5) == pytest.approx(1 / 3)
    assert res.fps_per_scan_at(0.6) == pytest.approx(0.8)
    assert res.fps_per_scan_at(0.75) == pytest.approx(1.0)
    assert res.fps_per_scan_at(0.9) == math.inf
    assert res.fps_per_scan_at(0.0) == 0.0


def test_scans_without_candidates_count_in_the_fp_rate() -> None:
    nodules = [nod("a", (0.0, 0.0, 0.0))]
    cands = [cand("a", (90.0, 0.0, 0.0), 0.9), cand("a", (0.0, 0.0, 0.0), 0.8)]
    one = evaluate_froc(nodules, cands)
    four = evaluate_froc(nodules, cands, series_uids=["a", "b", "c", "d"])
    assert one.n_scans == 1 and four.n_scans == 4
    assert four.fps_per_scan[-1] == pytest.approx(0.25)
    # One scan: points (0,0) (1,0) (1,1); 0.2502125 lies on the flat part: 0.
    # Four scans: (0,0) (.25,0) (.25,1); 0.2502125 is past the last point: 1.
    i = FROC_FP_RATES.index(0.25)
    assert one.sensitivity_at_rates[i] == 0.0 and four.sensitivity_at_rates[i] == 1.0
    # 0.125 on (0,0)-(.25,0) for four scans: 0.
    assert four.sensitivity_at_rates[0] == 0.0
    empty = evaluate_froc(nodules, [], series_uids=["a", "b"])
    assert empty.recall == 0.0 and empty.cpm == 0.0 and empty.n_candidates == 0


# ---------------------------------------------------------------------------------------------
# The per-scan cap
# ---------------------------------------------------------------------------------------------
def test_counted_marks_drop_ties_at_the_cut() -> None:
    # Sorted descending: .9 .5 .5 .3; the (2+1)-th is .5, so only marks strictly above .5 stay.
    np.testing.assert_array_equal(counted_marks([0.3, 0.9, 0.5, 0.5], 2), [0, 1, 0, 0])
    # Two marks do not exceed a cap of 2: all stay, whatever the ties.
    np.testing.assert_array_equal(counted_marks([0.5, 0.5], 2), [1, 1])
    np.testing.assert_array_equal(counted_marks([0.3, 0.9, 0.5], None), [1, 1, 1])
    np.testing.assert_array_equal(counted_marks([0.1, 0.4, 0.3, 0.2], 3), [0, 1, 1, 1])


def test_150_marks_at_one_count_for_nothing() -> None:
    nodules = [nod("a", (0.0, 0.0, 0.0))]
    marks = [cand("a", (0.0, 0.0, 0.0), 1.0)] + [
        cand("a", (100.0, float(i), 0.0), 1.0) for i in range(149)
    ]
    res = evaluate_froc(nodules, marks)
    assert res.n_marks == 0 and res.n_capped == 150 and res.n_false_positives == 0
    assert res.n_true_positives == 0 and res.cpm == 0.0
    assert res.recall == 1.0  # LunaSeg's recall sees every candidate, before the cap
    assert "No nodule hit" in res.summary()


def test_ties_at_the_101st_probability_are_all_dropped() -> None:
    nodules = [nod("a", (0.0, 0.0, 0.0))]
    fps = [cand("a", (100.0, float(i), 0.0), 0.9) for i in range(99)]
    on_nodule = cand("a", (0.0, 0.0, 0.0), 0.5)
    tied = [cand("a", (200.0, float(i), 0.0), 0.5) for i in range(2)]
    # 102 marks; the 101st highest is 0.5, so all three at 0.5 go (the nodule's among them).
    res = evaluate_froc(nodules, [on_nodule, *fps, *tied])
    assert res.n_marks == 99 and res.n_capped == 3 and res.n_true_positives == 0
    # 100 marks at 0.9 and the nodule's at 0.5: the 101st is 0.5, the 100 above it stay.
    res = evaluate_froc(nodules, [on_nodule, *fps, cand("a", (300.0, 0.0, 0.0), 0.9)])
    assert res.n_marks == 100 and res.n_true_positives == 0
    # Exactly 100 marks: no cap at all, the nodule's mark counts.
    res = evaluate_froc(nodules, [on_nodule, *fps])
    assert res.n_marks == 100 and res.n_true_positives == 1
    # Without a cap every mark counts.
    res = evaluate_froc(nodules, [on_nodule, *fps, *tied], max_marks_per_scan=None)
    assert res.n_marks == 102 and res.n_true_positives == 1


# ---------------------------------------------------------------------------------------------
# Options, summary, bad input
# ---------------------------------------------------------------------------------------------
def test_bootstrap_option_is_seeded_and_summarised() -> None:
    rng = np.random.default_rng(3)
    nodules, cands = [], []
    for s in range(12):
        uid = f"s{s}"
        for k in range(2):
            nodules.append(nod(uid, (100.0 * k, 0.0, 0.0)))
            if rng.random() < 0.7:
                cands.append(cand(uid, (100.0 * k + 1, 0.0, 0.0), float(rng.random())))
        cands += [cand(uid, (0.0, 300.0 + i, 0.0), float(rng.random())) for i in range(3)]
    one = evaluate_froc(nodules, cands, bootstrap=200, seed=11)
    two = evaluate_froc(nodules, cands, bootstrap=200, seed=11)
    assert one.bootstrap is not None and two.bootstrap is not None
    assert one.bootstrap.cpm_lower == two.bootstrap.cpm_lower
    np.testing.assert_array_equal(one.bootstrap.sensitivity_upper, two.bootstrap.sensitivity_upper)
    assert one.bootstrap.cpm_lower <= one.cpm <= one.bootstrap.cpm_upper
    assert one.bootstrap.cpm_lower < one.bootstrap.cpm_upper
    assert np.all(one.bootstrap.sensitivity_lower <= one.sensitivity_at_rates)
    assert np.all(one.sensitivity_at_rates <= one.bootstrap.sensitivity_upper)
    text = one.summary()
    assert "CPM 95% bootstrap interval" in text and "seed 11" in text
    assert evaluate_froc(nodules, cands).bootstrap is None  # off by default


def test_a_bootstrap_over_fewer_than_five_scans_is_not_printed_as_an_interval() -> None:
    nodules = [nod(f"s{s}", (0.0, 0.0, 0.0)) for s in range(4)]
    cands = [cand("s0", (1.0, 0.0, 0.0), 0.9), cand("s1", (0.0, 300.0, 0.0), 0.8)]
    text = evaluate_froc(nodules, cands, bootstrap=50, seed=1).summary()
    assert "bootstrap interval" not in text
    assert "no interval from 4 scan(s) (fewer than 5)" in text


def test_the_froc_plot_draws_no_error_bars_from_fewer_than_five_scans(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from matplotlib.axes import Axes

    drawn: list[int] = []
    plain_errorbar = Axes.errorbar

    def errorbar(self: Axes, *args: object, **kwargs: object) -> object:
        drawn.append(1)
        return plain_errorbar(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Axes, "errorbar", errorbar)
    for n_scans, bars in ((4, 0), (5, 1)):
        nodules = [nod(f"s{s}", (0.0, 0.0, 0.0)) for s in range(n_scans)]
        cands = [cand("s0", (1.0, 0.0, 0.0), 0.9), cand("s1", (0.0, 300.0, 0.0), 0.8)]
        res = evaluate_froc(nodules, cands, bootstrap=50, seed=1)
        assert res.bootstrap is not None and res.bootstrap.n_used
        drawn.clear()
        plot_froc(res, tmp_path / f"froc{n_scans}.png")
        assert len(drawn) == bars, f"{n_scans} scans"


def test_summary_separates_official_figures_from_lunaseg_additions() -> None:
    res = evaluate_froc([nod("a", (0.0, 0.0, 0.0))], [cand("a", (0.0, 0.0, 0.0), 0.8)])
    official, additions = res.summary().split("LunaSeg additions")
    assert "CPM" in official and "Sensitivity (counted marks): 1.000 (1/1)" in official
    assert "before the per-scan cap" in additions and "90%" in additions


def test_bad_options_and_probabilities_are_errors() -> None:
    nodules = [nod("a", (0.0, 0.0, 0.0))]
    with pytest.raises(ConfigError, match="max_marks_per_scan"):
        evaluate_froc(nodules, [], max_marks_per_scan=0)
    with pytest.raises(ConfigError, match="fp_rates"):
        evaluate_froc(nodules, [], fp_rates=(16.0,))
    with pytest.raises(ConfigError, match="bootstrap"):
        evaluate_froc(nodules, [], bootstrap=-1)
    with pytest.raises(AnnotationError, match="probability nan"):
        evaluate_froc(nodules, [cand("a", (0.0, 0.0, 0.0), math.nan)])
    unknown_size = evaluate_froc(
        [nod("a", (0.0, 0.0, 0.0), None)], [cand("a", (4.9, 0.0, 0.0), 0.5)]
    )  # scored as 10 mm, not an error
    assert unknown_size.n_nodules == 1 and unknown_size.recall == 1.0


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------
def test_read_submission_and_series_list(tmp_path: Path) -> None:
    good = tmp_path / "cands.csv"
    # Columns by name in any order, as the official script reads them; extras ignored.
    good.write_text(
        "probability,seriesuid,coordZ,coordY,coordX,diameter_mm\n"
        "0.75,s1,3,-2,1.5,6.0\n\n0.1,s2,0,0,0,4\n"
    )
    cands = read_submission(good)
    assert [c.series_uid for c in cands] == ["s1", "s2"]
    assert cands[0].center_xyz_mm == (1.5, -2.0, 3.0) and cands[0].probability == 0.75
    assert cands[1].row == 4
    wrong_header = tmp_path / "hdr.csv"
    wrong_header.write_text("seriesuid,coordX,coordY,coordZ,class\ns1,1,2,3,1\n")
    with pytest.raises(AnnotationError, match=r"header lacks column\(s\) probability"):
        read_submission(wrong_header)
    with pytest.raises(AnnotationError, match="does not exist"):
        read_submission(tmp_path / "missing.csv")
    uids = tmp_path / "uids.csv"
    uids.write_text("seriesuid\ns1\ns2\n\n")
    assert read_series_list(uids) == ["s1", "s2"]


@pytest.mark.parametrize(
    ("row", "match"),
    [
        ("s1,1,2,3,nan", r"line 3: probability is 'nan'"),
        ("s1,1,2,3,", r"line 3: probability is empty"),
        ("s1,1,2,3, ", r"line 3: probability is empty"),
        ("s1,1,2,3,NaN", r"line 3: probability is 'NaN'"),
        ("s1,1,2,x,0.5", r"line 3: coordZ is 'x'"),
        ("s1,1,,3,0.5", r"line 3: coordY is empty"),
        ("s1,inf,2,3,0.5", r"line 3: coordX is 'inf'"),
        ("s1,1,2,3", r"line 3: 4 field\(s\) where the header has 5"),
        ("s1,1,2,3,0.5,0.9", r"line 3: 6 values where the header has 5"),
        (",1,2,3,0.5", r"line 3: empty seriesuid"),
    ],
)
def test_read_submission_names_file_line_and_column(tmp_path: Path, row: str, match: str) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(f"seriesuid,coordX,coordY,coordZ,probability\ns1,0,0,0,0.5\n{row}\n")
    with pytest.raises(AnnotationError, match=match) as info:
        read_submission(bad)
    assert str(bad) in str(info.value)


def test_read_excluded_diameters(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "annotations_excluded.csv"
    path.write_text(
        "seriesuid,coordX,coordY,coordZ,diameter_mm\n"
        "s1,0,0,0,-1\ns1,50,0,0,\ns1,90,0,0,4.5\ns1,150,0,0,0\n"
    )
    with caplog.at_level(logging.WARNING):
        found = read_excluded(path)
    assert "1 excluded findings have no diameter" in caplog.text
    assert [f.diameter_mm for f in found] == [None, None, 4.5, 0.0]
    assert all(not f.is_nodule for f in found)
    marks = [
        cand("s1", (4.99, 0.0, 0.0), 0.9),  # inside the 10 mm given to -1
        cand("s1", (0.0, 5.0, 0.0), 0.8),  # on its radius: false positive
        cand("s1", (150.0, 0.0, 0.0), 0.7),  # diameter 0: false positive
    ]
    res = evaluate_froc([], marks, excluded=found)
    assert res.n_ignored == 1 and res.n_false_positives == 2
    bad = tmp_path / "bad.csv"
    bad.write_text("seriesuid,coordX,coordY,coordZ\ns1,a,0,0\n")
    with pytest.raises(AnnotationError, match="line 2: coordX"):
        read_excluded(bad)


def test_default_excluded_and_series_list_are_found_beside_their_files(tmp_path: Path) -> None:
    annotations = tmp_path / "annotations.csv"
    candidates = tmp_path / "run" / "candidates.csv"
    assert find_excluded(annotations) is None and find_series_list(candidates) is None
    (tmp_path / "annotations_excluded.csv").write_text("seriesuid,coordX,coordY,coordZ\n")
    candidates.parent.mkdir()
    (candidates.parent / "seriesuids.csv").write_text("s1\n")
    assert find_excluded(annotations) == tmp_path / "annotations_excluded.csv"
    assert find_series_list(candidates) == candidates.parent / "seriesuids.csv"


def test_curve_csv_and_plot_are_written_once(tmp_path: Path) -> None:
    res = evaluate_froc(
        [nod("a", (0.0, 0.0, 0.0))],
        [cand("a", (0.0, 0.0, 0.0), 0.8), cand("a", (50.0, 0.0, 0.0), 0.6)],
        bootstrap=20,
        seed=0,
    )
    csv_path = write_froc_csv(res, tmp_path / "froc.csv")
    lines = csv_path.read_text().splitlines()
    assert lines == ["threshold,fps_per_scan,sensitivity", "inf,0,0", "0.8,0,1", "0.6,1,1"]
    png = plot_froc(res, tmp_path / "froc.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(OutputExistsError):
        write_froc_csv(res, csv_path)
    with pytest.raises(OutputExistsError):
        plot_froc(res, png)
    write_froc_csv(res, csv_path, overwrite=True)


def test_text_is_written_atomically_once(tmp_path: Path) -> None:
    path = write_text_atomic(tmp_path / "new" / "list.csv", "a\r\nb\n")
    assert path.read_bytes() == b"a\r\nb\n"  # written as given, parent folder created
    with pytest.raises(OutputExistsError, match=r"list\.csv"):
        write_text_atomic(path, "c\n")
    assert path.read_bytes() == b"a\r\nb\n"
    write_text_atomic(path, "c\n", overwrite=True)
    assert path.read_bytes() == b"c\n" and [p.name for p in path.parent.iterdir()] == ["list.csv"]

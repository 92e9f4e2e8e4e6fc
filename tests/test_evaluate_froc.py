"""The FROC curve, its reading and its bootstrap (src_train.evaluate.froc) on hand-computed cases.

Each expected value follows the official LUNA16 script's arithmetic (scikit-learn's
``roc_curve`` with ``drop_intermediate``, ``np.interp`` on ``linspace(0.125, 8, 10001)``).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from src_train.errors import CancelledError
from src_train.evaluate.froc import (
    FROC_FP_RATES,
    FROC_GRID_MAX_FP_PER_SCAN,
    FROC_GRID_MIN_FP_PER_SCAN,
    FROC_GRID_POINTS,
    bootstrap_froc,
    bootstrap_from_samples,
    bound_indices,
    fps_at_sensitivity,
    froc_curve,
    reading_points,
    sensitivity_at,
)


def test_reading_points_are_the_nearest_grid_points() -> None:
    # Grid step 7.875 / 10000 = 0.0007875; e.g. 1 = 0.125 + 1111.11 steps -> 1111 -> 0.9999125.
    expected = [0.125, 0.2502125, 0.49985, 0.9999125, 2.0000375, 4.0002875, 8.0]
    np.testing.assert_allclose(reading_points(), expected, rtol=0, atol=1e-12)
    # The common Python-3 adaptations take the grid point within 3e-4 of each rate: the same.
    grid = np.linspace(FROC_GRID_MIN_FP_PER_SCAN, FROC_GRID_MAX_FP_PER_SCAN, FROC_GRID_POINTS)
    for rate, point in zip(FROC_FP_RATES, reading_points(), strict=True):
        (window,) = np.flatnonzero(np.abs(grid - rate) < 3e-4)
        assert grid[window] == point


def test_intermediate_points_are_dropped_as_roc_curve_does() -> None:
    # Descending: TP .95 | FP .90 | TP .85 | FP .80 | FP .70 | FP .60 | TP .50 | FP .40.
    # Cumulative fp = 0 1 1 2 3 4 4 5, tp = 1 1 2 2 2 2 3 3. Second differences are both 0 at
    # .80 (fp 1,2,3; tp 2,2,2) and at .70 (fp 2,3,4; tp 2,2,2): those two points go.
    curve = froc_curve(
        np.array([0.95, 0.85, 0.50]),
        np.array([0.90, 0.80, 0.70, 0.60, 0.40]),
        n_nodules=4,
        n_scans=3,
    )
    np.testing.assert_allclose(curve.thresholds, [np.inf, 0.95, 0.90, 0.85, 0.60, 0.50, 0.40])
    np.testing.assert_allclose(curve.fps_per_scan, np.array([0, 0, 1, 1, 4, 4, 5]) / 3)
    np.testing.assert_allclose(curve.sensitivity, [0, 0.25, 0.25, 0.5, 0.5, 0.75, 0.75])
    # A vertical run: TP .9 .8 .7 then FP .6: counts tp 1 2 3 3, fp 0 0 0 1; .8 goes.
    run = froc_curve(np.array([0.9, 0.8, 0.7]), np.array([0.6]), n_nodules=3, n_scans=1)
    np.testing.assert_allclose(run.thresholds, [np.inf, 0.9, 0.7, 0.6])
    np.testing.assert_allclose(run.sensitivity, [0, 1 / 3, 1, 1])


def test_ties_give_one_point_per_distinct_probability() -> None:
    # TP .7, TP .7, FP .7, FP .2 on 2 scans, 2 nodules: one point at .7 with (tp, fp) = (2, 1).
    curve = froc_curve(np.array([0.7, 0.7]), np.array([0.7, 0.2]), n_nodules=2, n_scans=2)
    np.testing.assert_allclose(curve.thresholds, [np.inf, 0.7, 0.2])
    np.testing.assert_allclose(curve.fps_per_scan, [0, 0.5, 1.0])
    np.testing.assert_allclose(curve.sensitivity, [0, 1, 1])
    # The diagonal (0,0)-(0.5,1) is read linearly: 0.125 -> 0.25.
    assert sensitivity_at(curve, np.array([0.125]))[0] == pytest.approx(0.25)


def test_border_cases() -> None:
    # No false positives: the script sets every FP rate to 0.
    curve = froc_curve(np.array([0.9, 0.4]), np.array([]), n_nodules=3, n_scans=5)
    np.testing.assert_array_equal(curve.fps_per_scan, [0, 0, 0])
    np.testing.assert_allclose(curve.sensitivity, [0, 1 / 3, 2 / 3])
    np.testing.assert_allclose(sensitivity_at(curve, reading_points()), 2 / 3)
    # Nothing found but false positives: 0 (the script's 0 * NaN), not NaN.
    curve = froc_curve(np.array([]), np.array([0.9, 0.1]), n_nodules=2, n_scans=1)
    np.testing.assert_array_equal(curve.sensitivity, [0, 0, 0])
    np.testing.assert_allclose(curve.fps_per_scan, [0, 1, 2])
    # Nothing at all: one point at the origin.
    curve = froc_curve(np.array([]), np.array([]), n_nodules=2, n_scans=1)
    np.testing.assert_array_equal(curve.sensitivity, [0])
    # No nodules: no sensitivity.
    curve = froc_curve(np.array([]), np.array([0.5]), n_nodules=0, n_scans=1)
    assert np.isnan(curve.sensitivity).all() and math.isnan(fps_at_sensitivity(curve, 0.5))


def test_interpolation_takes_the_top_of_a_vertical_step() -> None:
    # FP .9 | TP .8 | TP .6, TP .6 | FP .1 on 2 scans, 4 nodules: counts (tp, fp) = (0,1)
    # (1,1) (3,1) (3,2), none dropped. Points (0,0) (.5,0) (.5,.25) (.5,.75) (1,.75): np.interp
    # at exactly 0.5 gives the top of the step.
    curve = froc_curve(np.array([0.8, 0.6, 0.6]), np.array([0.9, 0.1]), n_nodules=4, n_scans=2)
    np.testing.assert_allclose(curve.fps_per_scan, [0, 0.5, 0.5, 0.5, 1])
    np.testing.assert_allclose(curve.sensitivity, [0, 0, 0.25, 0.75, 0.75])
    read = sensitivity_at(curve, np.array([0.25, 0.5, 0.75, 3.0]))
    np.testing.assert_allclose(read, [0, 0.75, 0.75, 0.75])
    # FP per scan to reach a sensitivity on a vertical step: the step's FP rate.
    assert fps_at_sensitivity(curve, 0.5) == 0.5
    assert fps_at_sensitivity(curve, 0.8) == math.inf


def test_fps_at_sensitivity_tolerates_one_ulp() -> None:
    # 26 nodules, 23 found, one scan; TP i at 1 - i/100 and an FP just below each TP.
    # After 13 TPs the script's sensitivity is 13/23 * 23 / 26 = 0.49999999999999994, which
    # must still count as 50%: reached at fp = 12 (the 13th TP comes before the 13th FP).
    tp = 1.0 - np.arange(23) / 100
    curve = froc_curve(tp, tp - 0.005, n_nodules=26, n_scans=1)
    assert curve.sensitivity.max() < 23 / 26 + 1e-12
    assert (13 / 23 * 23) / 26 < 0.5
    assert fps_at_sensitivity(curve, 0.5) == 12.0


def test_bound_indices_follow_the_script() -> None:
    assert bound_indices(1000, 0.95) == (25, 975)
    assert bound_indices(4, 0.95) == (0, 3)
    assert bound_indices(4, 0.5) == (1, 3)


def test_bootstrap_on_given_draws_by_hand() -> None:
    # Scan 0: a nodule hit at .9 and an FP at .5. Scan 1: a missed nodule and an FP at .8.
    # Draw [0,0]: TP .9 x2, FP .5 x2 on 2 scans, 2 nodules: (0,0) (0,1) (1,1) -> 1 everywhere.
    # Draw [1,1]: nothing found -> 0. Draws [0,1], [1,0]: TP .9, FP .8, FP .5, 2 nodules:
    # counts (1,0) (1,1) (1,2), the middle one drops: (0,0) (0,.5) (1,.5) -> .5 everywhere.
    args = (np.array([0.9]), np.array([0]), np.array([0.5, 0.8]), np.array([0, 1]), np.array([1]))
    samples = np.array([[0, 0], [1, 1], [0, 1], [1, 0]])
    boot = bootstrap_from_samples(*args, samples, confidence=0.95)
    # CPMs sorted: 0, .5, .5, 1; mean .5; bounds at floor(.025*4) = 0 and floor(.975*4) = 3.
    assert (boot.cpm_mean, boot.cpm_lower, boot.cpm_upper) == (0.5, 0.0, 1.0)
    np.testing.assert_array_equal(boot.sensitivity_mean, 0.5)
    assert boot.n_used == boot.n_samples == 4
    # With 50% confidence the bounds are sorted[1] = .5 and sorted[3] = 1.
    narrow = bootstrap_from_samples(*args, samples, confidence=0.5)
    assert (narrow.cpm_lower, narrow.cpm_upper) == (0.5, 1.0)


def test_bootstrap_sample_equals_the_curve_of_its_duplicated_scans() -> None:
    rng = np.random.default_rng(5)
    tp, tp_scan = rng.random(6).round(2), rng.integers(0, 4, 6)
    fp, fp_scan = rng.random(15).round(2), rng.integers(0, 4, 15)
    missed = np.array([0, 3])
    draw = np.array([2, 2, 0, 3])  # scan 2 twice, scan 1 not at all
    boot = bootstrap_from_samples(tp, tp_scan, fp, fp_scan, missed, draw[None, :])
    copies = np.bincount(draw, minlength=4)
    curve = froc_curve(
        np.repeat(tp, copies[tp_scan]),
        np.repeat(fp, copies[fp_scan]),
        n_nodules=int(copies[tp_scan].sum() + copies[missed].sum()),
        n_scans=4,
    )
    np.testing.assert_array_equal(boot.sensitivity_mean, sensitivity_at(curve, reading_points()))


def test_bootstrap_leaves_out_draws_without_nodules_and_is_seeded() -> None:
    # Scan 0 holds a found nodule, scan 1 only an FP: the draw [1, 1] has no sensitivity.
    args = (np.array([0.9]), np.array([0]), np.array([0.5]), np.array([1]), np.array([], int))
    boot = bootstrap_from_samples(*args, np.array([[1, 1], [0, 1]]))
    assert (boot.n_samples, boot.n_used) == (2, 1)
    # Of 50 draws about a quarter are [1, 1]; a seed fixes which.
    one = bootstrap_froc(*args, n_scans=2, n_samples=50, seed=1)
    two = bootstrap_froc(*args, n_scans=2, n_samples=50, seed=1)
    other = bootstrap_froc(*args, n_scans=2, n_samples=50, seed=2)
    assert (one.n_used, one.cpm_mean, one.seed) == (two.n_used, two.cpm_mean, 1)
    assert 25 < one.n_used < 50 and (one.n_used, one.cpm_mean) != (other.n_used, other.cpm_mean)


def test_bootstrap_reports_progress_and_stops_on_request() -> None:
    args = (np.array([0.9]), np.array([0]), np.array([0.5]), np.array([1]), np.array([], int))
    seen: list[tuple[int, int]] = []
    bootstrap_froc(
        *args, n_scans=2, n_samples=5, seed=0, progress=lambda d, n, _: seen.append((d, n))
    )
    assert seen == [(1, 5), (2, 5), (3, 5), (4, 5), (5, 5)]
    polls = iter([False, False, True])
    with pytest.raises(CancelledError, match="after 2 of 5"):
        bootstrap_froc(*args, n_scans=2, n_samples=5, seed=0, should_stop=lambda: next(polls))

"""benchmarks/blob_candidates.py: the dot filter finds a ball and not a vessel or a wall, on an
anisotropic grid, in the right place; merging keeps blob points away from the run's marks."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from src_train.evaluate import Candidate

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"

LUNG_HU, TISSUE_HU = -850.0, 40.0
SPACING = (2.5, 0.7, 0.7)  # a thick-slice scan: the filter resamples to 1 mm first


@pytest.fixture
def blobs(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The script as a module (its folder on sys.path, as ``python benchmarks/...`` has it)."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    sys.modules.pop("blob_candidates", None)
    return importlib.import_module("blob_candidates")


def _scene() -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Lung with a 6 mm ball, a 3 mm vessel oblique in-plane (on the line ``y + x = 105`` mm at
    ``z = 50`` mm, from the volume's edge to ``x = 55`` mm) and a chest wall (``x >= 68`` mm)."""
    shape = (40, 110, 110)
    z, y, x = (np.arange(n) * s for n, s in zip(shape, SPACING, strict=True))
    zz, yy, xx = np.meshgrid(z, y, x, indexing="ij")
    hu = np.full(shape, LUNG_HU, dtype=np.float32)
    ball = np.array([50.0, 30.0, 25.0])
    hu[(zz - ball[0]) ** 2 + (yy - ball[1]) ** 2 + (xx - ball[2]) ** 2 <= 3.0**2] = TISSUE_HU
    tube = (zz - 50.0) ** 2 + ((yy + xx - 105.0) / np.sqrt(2.0)) ** 2 <= 1.5**2
    hu[tube & (xx <= 55.0)] = TISSUE_HU  # it ends 13 mm before the wall
    hu[xx >= 68.0] = TISSUE_HU  # the wall
    return hu, {"ball": ball}


def _mm(irc: np.ndarray) -> np.ndarray:
    return np.asarray(irc) * np.asarray(SPACING)


def test_the_strongest_point_is_the_ball_and_none_lies_on_the_vessel_or_the_wall(
    blobs: ModuleType,
) -> None:
    hu, where = _scene()
    field = np.ones(hu.shape, dtype=bool)
    points = blobs.find_blobs(hu, SPACING, blobs.BlobConfig(), field=field)
    assert len(points) >= 1
    assert np.all(np.diff(points.response) <= 0)  # strongest first
    top = _mm(points.irc[0])
    assert np.linalg.norm(top - where["ball"]) <= 1.5  # a thick slice is 2.5 mm
    assert 3.0 <= points.diameter_mm[0] <= 10.0
    mm = _mm(points.irc)
    on_vessel = np.hypot(mm[:, 0] - 50.0, (mm[:, 1] + mm[:, 2] - 105.0) / np.sqrt(2.0)) <= 3.0
    on_vessel &= (mm[:, 1] > 56.0) & (mm[:, 1] < 70.0)  # away from the tube's ends
    assert not np.any(points.response[on_vessel] > 0.1 * points.response[0])
    on_wall = np.abs(mm[:, 2] - 68.0) <= 3.0
    assert not np.any(points.response[on_wall] > 0.1 * points.response[0])


def test_points_outside_the_lung_field_are_not_reported(blobs: ModuleType) -> None:
    hu, where = _scene()
    field = np.ones(hu.shape, dtype=bool)
    field[:, :, :40] = False  # the ball (x = 25 mm, column 36) is outside
    points = blobs.find_blobs(hu, SPACING, blobs.BlobConfig(), field=field)
    mm = _mm(points.irc)
    assert not np.any(np.linalg.norm(mm - where["ball"], axis=1) <= 3.0)


def test_bad_settings_are_refused(blobs: ModuleType) -> None:
    from src_train.errors import ConfigError

    with pytest.raises(ConfigError, match="grid"):
        blobs.BlobConfig(grid_mm=0)
    with pytest.raises(ConfigError, match="scales"):
        blobs.BlobConfig(sigmas_mm=(1.0, -1.0))


def test_merging_skips_points_near_a_mark_and_keeps_each_scans_most_probable(
    blobs: ModuleType,
) -> None:
    marks = [
        Candidate("a", (0.0, 0.0, 0.0), 0.9),
        Candidate("a", (50.0, 0.0, 0.0), 0.2),
    ]
    xyz = np.array([[3.0, 0.0, 0.0], [20.0, 0.0, 0.0], [21.0, 0.0, 0.0], [80.0, 0.0, 0.0]])
    points = {
        "a": blobs.ScanPoints(xyz, np.zeros(4), np.ones(4), np.full(4, 5.0), 0.0),
    }
    probability = {"a": np.array([0.99, 0.5, 0.45, 0.1])}
    merged, per_scan = blobs.merged_marks(marks, points, probability, radius_mm=5.0, cap=3)
    # 3 mm from the 0.9 mark: dropped; 21 mm is 1 mm from the kept 20 mm point: dropped;
    # the cap of 3 leaves the 0.1 point out.
    assert [(m.center_xyz_mm[0], m.probability) for m in merged] == [
        (0.0, 0.9),
        (20.0, 0.5),
        (50.0, 0.2),
    ]
    assert per_scan == 1.0


def test_a_run_folder_without_candidates_is_one_error_line(
    blobs: ModuleType, tiny_synth_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import runpy

    script = BENCHMARKS / "blob_candidates.py"
    monkeypatch.setattr(sys, "argv", [str(script), str(tiny_synth_dir), str(tmp_path)])
    with pytest.raises(SystemExit, match=r"error: .*candidates\.csv does not exist"):
        runpy.run_path(str(script), run_name="__main__")

"""Protocol families of the synthetic scans (src_train/synth/protocols.py, texture.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from src_train.cli import main as cli_main
from src_train.errors import ConfigError
from src_train.synth import (
    MARKER_FILE,
    SynthConfig,
    generate_scan,
    same_dataset,
    synthetic_series_uid,
)
from src_train.synth.anatomy import draw_anatomy, draw_geometry
from src_train.synth.protocols import (
    FAMILIES,
    FAMILY_NAMES,
    MIXED,
    ScanProtocol,
    UnknownProtocolError,
    draw_protocol,
)
from src_train.synth.texture import apply_kernel

#: Small scans: the protocol sets the spacing, the in-plane size stays small.
SMALL = {"inplane_px_range": (64, 64), "slices_range": (8, 400), "nodules_per_scan_range": (1, 1)}


@pytest.mark.parametrize("name", list(FAMILIES))
def test_each_family_draws_its_own_geometry_and_look(name: str) -> None:
    family = FAMILIES[name]
    config = SynthConfig(protocol=name, **SMALL)  # type: ignore[arg-type]
    for seed in range(3):
        scan = generate_scan("uid", seed, config)
        protocol = scan.protocol
        assert protocol is not None and protocol.family == name
        spacing_z, spacing_y, spacing_x = scan.ct.geometry.spacing_irc_mm
        low, high = family.slice_spacing_mm
        assert low <= spacing_z <= high
        low, high = family.inplane_spacing_mm
        assert low <= spacing_y == spacing_x <= high
        assert protocol.kernel in family.kernels
        assert family.hu_offset[0] <= protocol.hu_offset <= family.hu_offset[1]
        corner = scan.ct.hu[:, 0, 0]
        assert np.all(corner == protocol.pad_hu) and protocol.pad_hu in family.outside_fov_hu


def test_mixed_draws_every_family_and_the_default_is_mixed() -> None:
    assert SynthConfig().protocol == MIXED
    rng = np.random.default_rng(0)
    seen = {draw_protocol(rng, MIXED).family for _ in range(200)}
    assert seen == set(FAMILIES)


def test_unknown_family_is_refused_with_the_list() -> None:
    with pytest.raises(UnknownProtocolError, match="thin-sharp") as caught:
        SynthConfig(protocol="helical")
    assert isinstance(caught.value, ConfigError)
    assert all(name in str(caught.value) for name in FAMILY_NAMES)


def test_cli_unknown_family_exits_2_listing_the_families(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli_main(["synth", str(tmp_path / "out"), "--tiny", "--protocol", "helical"])
    assert code == 2
    err = capsys.readouterr().err
    assert "'helical'" in err and all(name in err for name in FAMILY_NAMES)
    assert not (tmp_path / "out").exists()


def test_cli_writes_a_family_and_records_each_scan_protocol(tmp_path: Path) -> None:
    out = tmp_path / "thick"
    assert cli_main(["synth", str(out), "--tiny", "--scans", "2", "--protocol", "thick"]) == 0
    marker = json.loads((out / MARKER_FILE).read_text())
    assert marker["config"]["protocol"] == "thick"
    assert len(marker["protocols"]) == 2
    for drawn in marker["protocols"].values():
        assert drawn["family"] == "thick" and 2.0 <= drawn["slice_spacing_mm"] <= 3.0


def test_families_made_with_one_seed_never_share_a_series_uid(tmp_path: Path) -> None:
    folders = {}
    for family in ("thick", "low-dose", MIXED):
        out = tmp_path / family
        args = ["synth", str(out), "--tiny", "--scans", "2", "--seed", "5", "--protocol", family]
        assert cli_main(args) == 0
        folders[family] = sorted(p.stem for p in (out / "subset0").glob("*.mhd"))
        assert len(folders[family]) == 2
        # the same command again recognises the folder as the data set it asks for
        assert same_dataset(out, 2, 5, SynthConfig.tiny(protocol=family))
    assert not set(folders["thick"]) & set(folders["low-dose"])
    assert not set(folders["thick"]) & set(folders[MIXED])
    # the mixed default keeps the UIDs it always had (older folders and notes stay valid)
    assert folders[MIXED] == sorted(synthetic_series_uid(5, i) for i in range(2))
    assert synthetic_series_uid(5, 0, "thick") in folders["thick"]


def _protocol(coverage: str) -> ScanProtocol:
    return ScanProtocol("test", 2.0, 1.5, "smooth", 20.0, 0.0, -2000, coverage)


@pytest.mark.parametrize("coverage", ["full", "starts-inside", "ends-inside"])
def test_partial_coverage_cuts_the_lungs(coverage: str) -> None:
    config = SynthConfig.tiny()
    rng = np.random.default_rng(3)
    protocol = _protocol(coverage)
    geometry, n_full = draw_geometry(rng, config, protocol)
    anat = draw_anatomy(rng, config, geometry, protocol, n_full)
    n_z = geometry.shape_irc[0]
    first = float(anat.u_of_z(0.0))
    last = float(anat.u_of_z((n_z - 1) * geometry.spacing_irc_mm[0]))
    if coverage == "full":
        assert n_z == n_full and first < 0.05 and last > 0.9  # base to apex
    elif coverage == "starts-inside":
        assert n_z < n_full and first > 0.2 and last > 0.9  # starts above the base
    else:
        assert n_z < n_full and first < 0.05 and last < 0.8  # ends below the apex


@pytest.mark.parametrize("spacing", [0.5, 0.95])
def test_kernels_set_noise_level_and_texture(spacing: float) -> None:
    flat = np.zeros((6, 96, 96), dtype=np.float32)
    stats = {}
    for kernel in ("smooth", "sharp"):
        protocol = ScanProtocol("test", 1.0, spacing, kernel, 30.0, 0.0, -2000, "full")
        out = apply_kernel(flat, protocol, (1.0, spacing, spacing), np.random.default_rng(1))
        lag1 = float(np.corrcoef(out[:, :, :-1].ravel(), out[:, :, 1:].ravel())[0, 1])
        stats[kernel] = (float(out.std()), lag1)
        assert abs(stats[kernel][0] - 30.0) < 2.0  # the protocol's noise level
    assert stats["smooth"][1] > 0.3  # smooth kernel: noise correlated between neighbours
    assert abs(stats["sharp"][1]) < 0.05  # sharp kernel: fine-grained noise


def test_sharp_kernel_overshoots_at_an_edge() -> None:
    step = np.zeros((2, 32, 64), dtype=np.float32)
    step[:, :, 32:] = 1000.0
    protocol = ScanProtocol("test", 1.0, 0.7, "sharp", 0.0, 0.0, -2000, "full")
    sharp = apply_kernel(step, protocol, (1.0, 0.7, 0.7), np.random.default_rng(0))
    assert sharp.max() > 1050 and sharp.min() < -50  # ringing on both sides of the edge
    smooth = apply_kernel(
        step,
        ScanProtocol("test", 1.0, 0.7, "smooth", 0.0, 0.0, -2000, "full"),
        (1, 0.7, 0.7),
        np.random.default_rng(0),
    )
    assert 0 < smooth[0, 0, 32] < 1000 and smooth.max() <= 1000.001  # blurred, no overshoot


def test_hu_offset_shifts_stored_values() -> None:
    config = SynthConfig(protocol="odd", **SMALL)  # type: ignore[arg-type]
    checked = 0
    for seed in range(12):
        scan = generate_scan("uid", seed, config)
        assert scan.protocol is not None
        offset = scan.protocol.hu_offset
        if offset < 0:  # air below -1024 is clipped where LUNA16 stores it
            continue
        n = scan.ct.hu.shape[2]
        air = scan.ct.hu[:, 3:6, n // 2 - 3 : n // 2 + 3]  # in the field of view, above the body
        assert abs(float(np.median(air)) - (-1000 + offset)) < 6
        checked += 1
    assert checked >= 3

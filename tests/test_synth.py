"""Synthetic chest CT in LUNA16 layout (src_train/synth/)."""

from __future__ import annotations

import csv
import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from src_train.ct import load_ct
from src_train.errors import CancelledError, ConfigError, OutputExistsError, OutputWriteError
from src_train.luna import (
    LEGACY_TRUTH_TABLE,
    TRUE_NODULE_KINDS,
    TRUTH_DIR,
    TRUTH_TABLE,
    LunaFolder,
    read_candidates,
)
from src_train.synth import (
    MARKER_FILE,
    UID_PREFIX,
    SynthConfig,
    generate_scan,
    luna16_diameters_mm,
    synthetic_series_uid,
    write_dataset,
)

TINY = SynthConfig.tiny()


@pytest.fixture(scope="module")
def folder(tiny_synth_dir: Path) -> LunaFolder:
    return LunaFolder(tiny_synth_dir)


@pytest.fixture(scope="module")
def volumes(folder: LunaFolder) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """uid -> (HU, truth labels) of the shared tiny data set."""
    out = {}
    for uid in folder.series_uids:
        truth_path = folder.truth_path(uid)
        assert truth_path is not None
        out[uid] = (folder.load(uid).hu, load_ct(truth_path).hu)
    return out


def test_same_seed_gives_identical_scans() -> None:
    a = generate_scan("uid", 7, TINY)
    b = generate_scan("uid", 7, TINY)
    assert np.array_equal(a.ct.hu, b.ct.hu)
    assert np.array_equal(a.truth, b.truth)
    assert a.ct.geometry == b.ct.geometry
    assert a.nodules == b.nodules
    assert a.candidates == b.candidates
    c = generate_scan("uid", 8, TINY)
    assert c.ct.geometry != a.ct.geometry or not np.array_equal(c.ct.hu, a.ct.hu)


def test_dataset_is_deterministic(tmp_path: Path, tiny_synth_dir: Path) -> None:
    from tests.conftest import TINY_SYNTH_SCANS, TINY_SYNTH_SEED

    again = write_dataset(tmp_path / "again", TINY_SYNTH_SCANS, TINY_SYNTH_SEED, TINY)
    for name in ("annotations.csv", "candidates.csv", "truth/true_nodules.csv"):
        assert (tmp_path / "again" / name).read_text() == (tiny_synth_dir / name).read_text()
    first = again.series_uids[0]
    assert np.array_equal(
        again.load(first).hu, load_ct(tiny_synth_dir / "subset0" / f"{first}.mhd").hu
    )


def test_uids_look_like_luna() -> None:
    uids = [synthetic_series_uid(0, i) for i in range(20)] + [synthetic_series_uid(1, 0)]
    assert len(set(uids)) == len(uids)
    for uid in uids:
        assert uid.startswith(UID_PREFIX)
        suffix = uid[len(UID_PREFIX) :]
        assert len(suffix) == 30 and suffix.isdigit() and suffix[0] != "0"
    assert synthetic_series_uid(0, 3) == synthetic_series_uid(0, 3)


def test_layout(tiny_synth_dir: Path, folder: LunaFolder) -> None:
    assert len(folder.series_uids) == 4
    assert folder.missing_series == []
    assert folder.has_truth
    for uid in folder.series_uids:
        assert (tiny_synth_dir / "subset0" / f"{uid}.raw").is_file()
        assert (tiny_synth_dir / "truth" / f"{uid}.zraw").is_file()
    marker = json.loads((tiny_synth_dir / MARKER_FILE).read_text())
    assert marker["complete"] and marker["n_scans"] == 4


def test_geometry_varies_and_stays_in_range(folder: LunaFolder, volumes: dict) -> None:
    geometries = [folder.load(uid).geometry for uid in folder.series_uids]
    assert len({g.spacing_xyz_mm for g in geometries}) == len(geometries)
    assert len({g.origin_xyz_mm for g in geometries}) == len(geometries)
    for g in geometries:
        n_z, n_y, n_x = g.shape_irc
        assert n_y == n_x and TINY.inplane_px_range[0] <= n_x <= TINY.inplane_px_range[1]
        assert TINY.slices_range[0] <= n_z <= TINY.slices_range[1]
        sx, sy, sz = g.spacing_xyz_mm
        assert (
            sx == sy and TINY.spacing_inplane_mm_range[0] <= sx <= TINY.spacing_inplane_mm_range[1]
        )
        assert TINY.slice_spacing_mm_range[0] <= sz <= TINY.slice_spacing_mm_range[1]
        assert g.origin_xyz_mm[0] < 0 and g.origin_xyz_mm[1] < 0  # like LUNA16


def test_truth_labels_match_nodule_table(folder: LunaFolder, volumes: dict) -> None:
    for uid in folder.series_uids:
        ct = folder.load(uid)
        truth = volumes[uid][1]
        nodules = folder.true_nodules(uid)
        assert [n.label for n in nodules] == list(range(1, len(nodules) + 1))
        assert set(np.unique(truth)) == {0, *range(1, len(nodules) + 1)}
        annotations = folder.nodules(uid)
        assert len(annotations) == len(nodules)
        for nodule, annotation in zip(nodules, annotations, strict=True):
            where = np.argwhere(truth == nodule.label)
            assert len(where) * ct.geometry.voxel_volume_mm3 == pytest.approx(
                nodule.volume_mm3, rel=1e-4
            )
            com_xyz = ct.geometry.irc_to_xyz(where.mean(axis=0))
            assert np.allclose(com_xyz, nodule.center_xyz_mm, atol=1e-3)
            assert np.allclose(annotation.center_xyz_mm, nodule.center_xyz_mm, atol=1e-5)
            assert annotation.diameter_mm == pytest.approx(nodule.diameter_mm, abs=1e-5)
            assert nodule.diameter_mm == pytest.approx(
                (6 * nodule.volume_mm3 / np.pi) ** (1 / 3), rel=1e-4
            )


def test_centers_map_inside_the_nodule(folder: LunaFolder, volumes: dict) -> None:
    hits = total = 0
    for uid in folder.series_uids:
        geometry = folder.load(uid).geometry
        truth = volumes[uid][1]
        for nodule in folder.true_nodules(uid):
            irc = geometry.xyz_to_irc_index(nodule.center_xyz_mm)
            assert geometry.contains_irc(irc)
            hits += int(truth[tuple(irc)] == nodule.label)
            total += 1
    assert hits >= 0.8 * total  # a lobulated or clipped shape may miss its own center of mass


def test_diameters_and_kinds(folder: LunaFolder, volumes: dict) -> None:
    nodules = [n for uid in folder.series_uids for n in folder.true_nodules(uid)]
    kinds = Counter(n.kind for n in nodules)
    assert set(kinds) == set(TRUE_NODULE_KINDS)
    low, high = TINY.diameter_mm_range
    for n in nodules:
        assert 0 < n.diameter_mm <= 1.3 * high
        if n.kind not in ("edge", "juxtapleural"):  # those are clipped by the scan / the pleura
            assert 0.7 * low <= n.diameter_mm
    for uid in folder.series_uids:
        count = len(folder.true_nodules(uid))
        assert TINY.nodules_per_scan_range[0] <= count <= TINY.nodules_per_scan_range[1]


def test_lungs_noise_and_field_of_view(folder: LunaFolder, volumes: dict) -> None:
    for uid in folder.series_uids:
        hu = volumes[uid][0]
        lung_like = hu[(hu > -950) & (hu < -600)]
        assert -880 < np.median(lung_like) < -820
        assert 8 < lung_like.std() < 60  # noisy, not flat
        assert hu.max() > 300  # bone
        corner = hu[:, 0, 0]
        assert np.all(corner == corner[0]) and corner[0] in (-2000, -3024)
        center_row = hu[:, hu.shape[1] // 2, :]
        assert (center_row == corner[0]).mean() < 0.05  # padding only outside the circle


def test_nodule_intensities_by_kind(folder: LunaFolder, volumes: dict) -> None:
    ground_glass_above: list[float] = []
    for uid in folder.series_uids:
        hu, truth = volumes[uid]
        for n in folder.true_nodules(uid):
            inside = hu[truth == n.label].astype(float)
            if n.kind in ("ground-glass", "part-solid"):
                assert -680 < inside.mean() < -250
                ground_glass_above.append(float((inside > -700).mean()))
            elif n.kind in ("solid", "juxtapleural", "edge"):
                assert inside.mean() > -250
    fraction = float(np.mean(ground_glass_above))
    assert 0.5 < fraction < 1.0  # the -700 HU threshold sees most, not all, of ground glass


def test_edge_nodules_touch_the_end_slices(folder: LunaFolder, volumes: dict) -> None:
    seen = 0
    for uid in folder.series_uids:
        truth = volumes[uid][1]
        for n in folder.true_nodules(uid):
            if n.kind == "edge":
                seen += 1
                z = np.argwhere(truth == n.label)[:, 0]
                assert z.min() <= 1 or z.max() >= truth.shape[0] - 2
    assert seen


def test_juxtapleural_nodules_touch_the_chest_wall(folder: LunaFolder, volumes: dict) -> None:
    seen = 0
    for uid in folder.series_uids:
        hu, truth = volumes[uid]
        for n in folder.true_nodules(uid):
            if n.kind != "juxtapleural":
                continue
            seen += 1
            shape = truth == n.label
            grown = shape.copy()  # dilate by 2 voxels in-plane
            for _ in range(2):
                grown[:, 1:, :] |= grown[:, :-1, :]
                grown[:, :-1, :] |= grown[:, 1:, :]
                grown[:, :, 1:] |= grown[:, :, :-1]
                grown[:, :, :-1] |= grown[:, :, 1:]
            rim = grown & ~shape
            assert (hu[rim] > -300).mean() > 0.15  # dense tissue next to it: the wall
    assert seen


def test_candidates(tiny_synth_dir: Path, folder: LunaFolder, volumes: dict) -> None:
    candidates = read_candidates(tiny_synth_dir / "candidates.csv")
    for uid in folder.series_uids:
        mine = [c for c in candidates if c.series_uid == uid]
        positives = [c for c in mine if c.is_nodule]
        assert len(positives) == len(folder.true_nodules(uid))
        negatives = [c for c in mine if not c.is_nodule]
        low, high = TINY.false_candidates_per_scan_range
        assert low <= len(negatives) <= high
        geometry = folder.load(uid).geometry
        truth = volumes[uid][1]
        for c in negatives:
            irc = geometry.xyz_to_irc_index(c.center_xyz_mm)
            assert geometry.contains_irc(irc) and truth[tuple(irc)] == 0


def test_flipped_axes_keep_arrays_and_move_the_world() -> None:
    plain = generate_scan("u", 3, TINY)
    flipped = generate_scan("u", 3, SynthConfig.tiny(flip_xyz=(True, False, True)))
    assert np.array_equal(plain.ct.hu, flipped.ct.hu)
    assert np.array_equal(plain.truth, flipped.truth)
    assert np.diag(flipped.ct.geometry.direction_matrix).tolist() == [-1.0, 1.0, -1.0]
    for a, b in zip(plain.nodules, flipped.nodules, strict=True):
        irc_a = plain.ct.geometry.xyz_to_irc(a.center_xyz_mm)
        irc_b = flipped.ct.geometry.xyz_to_irc(b.center_xyz_mm)
        assert np.allclose(irc_a, irc_b, atol=1e-6)
        assert a.volume_mm3 == pytest.approx(b.volume_mm3)


def test_write_dataset_refuses_and_overwrites(tmp_path: Path) -> None:
    config = SynthConfig.tiny(nodules_per_scan_range=(1, 1), slices_range=(16, 16))
    calls: list[tuple[int, int, str]] = []
    folder = write_dataset(tmp_path / "d", 2, 5, config, progress=lambda *a: calls.append(a))
    assert [c[:2] for c in calls] == [(1, 2), (2, 2)]
    assert folder.series_uids[0] in calls[0][2] or folder.series_uids[1] in calls[0][2]
    with pytest.raises(OutputExistsError, match="--overwrite"):
        write_dataset(tmp_path / "d", 1, 6, config)
    folder = write_dataset(tmp_path / "d", 1, 6, config, overwrite=True)
    assert len(folder.series_uids) == 1  # the earlier scans are gone
    assert len(list((tmp_path / "d" / "truth").glob("*.mhd"))) == 1

    foreign = tmp_path / "luna"
    foreign.mkdir()
    (foreign / "annotations.csv").write_text("seriesuid,coordX,coordY,coordZ,diameter_mm\n")
    with pytest.raises(OutputExistsError, match="did not write"):
        write_dataset(foreign, 1, 0, config, overwrite=True)
    assert (foreign / "annotations.csv").is_file()


@pytest.mark.parametrize("entry", ["subset0", "truth", "candidates.csv"])
def test_overwrite_never_touches_a_foreign_partial_download(tmp_path: Path, entry: str) -> None:
    """A folder with LUNA16-like content but no marker (e.g. series downloaded, CSVs not yet) is
    refused even with overwrite: synthetic scans would be mixed in or replace its files."""
    config = SynthConfig.tiny(nodules_per_scan_range=(1, 1), slices_range=(16, 16))
    foreign = tmp_path / "luna"
    if entry.endswith(".csv"):
        foreign.mkdir()
        (foreign / entry).write_text("seriesuid,coordX,coordY,coordZ,class\n")
    else:
        (foreign / entry).mkdir(parents=True)
        (foreign / entry / "1.2.3.mhd").write_text("real header")
    before = sorted(p.relative_to(foreign) for p in foreign.rglob("*"))
    with pytest.raises(OutputExistsError, match=f"did not write.*{entry}"):
        write_dataset(foreign, 1, 0, config, overwrite=True)
    assert sorted(p.relative_to(foreign) for p in foreign.rglob("*")) == before
    # A folder with unrelated files only is still accepted with overwrite.
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    write_dataset(other, 1, 0, config, overwrite=True)
    assert (other / "notes.txt").read_text() == "mine"


def test_write_dataset_into_unwritable_place(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    with pytest.raises(OutputWriteError, match="afile"):
        write_dataset(tmp_path / "afile" / "data", 1, 0, SynthConfig.tiny(slices_range=(16, 16)))


def test_write_dataset_can_be_stopped(tmp_path: Path) -> None:
    config = SynthConfig.tiny(slices_range=(16, 16))
    with pytest.raises(CancelledError):
        write_dataset(tmp_path / "s", 3, 0, config, should_stop=lambda: True)
    assert not (tmp_path / "s" / "annotations.csv").exists()


def test_config_validation() -> None:
    with pytest.raises(ConfigError, match="slices_range"):
        SynthConfig(slices_range=(50, 40))
    with pytest.raises(ConfigError):
        SynthConfig(spacing_inplane_mm_range=(0.0, 0.5))
    with pytest.raises(ConfigError):
        write_dataset(Path("unused"), 0)
    with pytest.raises(ConfigError, match="uint8"):  # labels 256+ would not fit the truth volume
        SynthConfig(nodules_per_scan_range=(1, 300))


def test_packaged_diameters_match_luna16() -> None:
    diameters = luna16_diameters_mm()
    assert len(diameters) == 1186
    assert diameters.min() == pytest.approx(3.253, abs=1e-3)
    assert diameters.max() == pytest.approx(32.27, abs=1e-3)
    real = Path(__file__).resolve().parents[2] / "shared" / "data" / "luna16" / "annotations.csv"
    if real.is_file():
        with real.open() as handle:
            expected = sorted(round(float(r["diameter_mm"]), 3) for r in csv.DictReader(handle))
        assert np.allclose(diameters, expected)


def test_cli_synth(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from src_train.cli import main

    out = tmp_path / "cli"
    args = ["synth", str(out), "--scans", "1", "--tiny", "--slices", "16", "--seed", "3"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "wrote 1 scans" in printed and str(out) in printed
    assert len(LunaFolder(out).series_uids) == 1
    assert main(args) == 0  # the same data set again: nothing to write
    assert "already holds this synthetic data set" in capsys.readouterr().out
    assert main([*args, "--size", "64"]) == 2  # another one: refuses to overwrite
    assert "--overwrite" in capsys.readouterr().err
    assert main([*args, "--overwrite", "--size", "64"]) == 0
    assert LunaFolder(out).load(LunaFolder(out).series_uids[0]).shape_irc == (16, 64, 64)


def test_cli_synth_nodules_per_scan(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from src_train.cli import main

    base = ["synth", "--scans", "2", "--tiny", "--slices", "40", "--seed", "3"]
    assert main([*base[:1], str(tmp_path / "dense"), *base[1:], "--nodules", "6"]) == 0
    dense = LunaFolder(tmp_path / "dense")
    counts = [len(dense.true_nodules(uid)) for uid in dense.series_uids]
    assert counts == [6, 6]  # room for all six in a tiny chest, each kind in turn
    kinds = Counter(n.kind for uid in dense.series_uids for n in dense.true_nodules(uid))
    assert len(kinds) == len(TRUE_NODULE_KINDS) and max(kinds.values()) <= 2
    marker = json.loads((tmp_path / "dense" / MARKER_FILE).read_text())
    assert marker["config"]["nodules_per_scan_range"] == [6, 6]
    assert main([*base[:1], str(tmp_path / "dense"), *base[1:], "--nodules", "6-6"]) == 0
    assert "already holds this synthetic data set" in capsys.readouterr().out
    for bad in ("8-6", "x", "3-4-5", "-2", "256"):
        with pytest.raises(SystemExit) as stop:
            main([*base[:1], str(tmp_path / "bad"), *base[1:], "--nodules", bad])
        assert stop.value.code == 2
        assert "--nodules" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_true_nodules_table_has_its_own_name_and_older_folders_still_read(
    tmp_path: Path, tiny_synth_dir: Path
) -> None:
    """`lunaseg synth` writes truth/true_nodules.csv (never a second 'nodules.csv' beside the
    masks' table); a folder written by an older version, with truth/nodules.csv, still reads."""
    assert (TRUTH_TABLE, LEGACY_TRUTH_TABLE) == ("true_nodules.csv", "nodules.csv")
    truth = tiny_synth_dir / TRUTH_DIR
    assert (truth / "true_nodules.csv").is_file() and not (truth / "nodules.csv").exists()
    current = LunaFolder(tiny_synth_dir)
    assert current.truth_table_path == truth / "true_nodules.csv"

    old = tmp_path / "old"
    shutil.copytree(tiny_synth_dir, old)
    (old / TRUTH_DIR / TRUTH_TABLE).rename(old / TRUTH_DIR / LEGACY_TRUTH_TABLE)
    legacy = LunaFolder(old)
    assert legacy.has_truth and legacy.truth_table_path == old / TRUTH_DIR / "nodules.csv"
    for uid in current.series_uids:
        expected = current.true_nodules(uid)
        assert expected and legacy.true_nodules(uid) == expected
    (old / TRUTH_DIR / LEGACY_TRUTH_TABLE).unlink()
    assert not LunaFolder(old).has_truth and LunaFolder(old).true_nodules(uid) == []


def test_the_readme_order_view_then_synth_finds_the_data_set_done(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """README: 'lunaseg view' (writes lunaseg-data), then 'lunaseg synth lunaseg-data --scans 8
    --seed 0'. The second finds the very data set written and says so; nothing is rewritten."""
    import src_train.synth as synth
    import src_train.synth.dataset as synth_dataset
    from napari_lunaseg._cli import default_series
    from src_train.cli import main

    tiny = SynthConfig.tiny(slices_range=(16, 16), nodules_per_scan_range=(1, 2))
    for module in (synth, synth_dataset):  # the defaults of the CLI and of write_dataset
        monkeypatch.setattr(module, "SynthConfig", lambda: tiny)  # made small
    data = tmp_path / "lunaseg-data"
    opened = default_series(data, seed=0)  # what 'lunaseg view' does without a PATH
    assert len(LunaFolder(data).series_uids) == synth.DEFAULT_SCANS
    stamps = {p: p.stat().st_mtime_ns for p in data.rglob("*")}
    capsys.readouterr()
    assert main(["synth", str(data), "--scans", "8", "--seed", "0"]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert line == (
        f"{data} already holds this synthetic data set (8 scans, seed 0); nothing to write "
        "(--overwrite writes it again)"
    )
    assert {p: p.stat().st_mtime_ns for p in data.rglob("*")} == stamps
    assert default_series(data, seed=0) == opened  # and 'lunaseg view' opens it again

    assert main(["synth", str(data), "--scans", "3", "--seed", "0"]) == 2  # another data set
    err = capsys.readouterr().err
    assert "holds another synthetic data set (8 scans, seed 0)" in err and "--overwrite" in err
    (data / "subset0" / opened.name).unlink()  # no longer complete: written again on request
    assert not synth.same_dataset(data, 8, 0, tiny)

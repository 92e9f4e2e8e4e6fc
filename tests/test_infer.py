"""Whole-series inference, error volumes and candidate grouping."""

from __future__ import annotations

import math
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from src_train.cli import main
from src_train.colors import ERROR_FN, ERROR_FP, ERROR_TP
from src_train.context import context_stack
from src_train.ct import CtVolume, Geometry, load_ct, save_volume
from src_train.errors import CancelledError, ConfigError, GeometryError, OutputExistsError
from src_train.evaluate import evaluate_froc, read_series_list, read_submission
from src_train.infer import (
    BODY_MARGIN_PX,
    DEMO_CHECKPOINT,
    CandidateConfig,
    CandidateNodule,
    InferPlan,
    SeriesReport,
    error_volume,
    group_candidates,
    infer_to_folder,
    lung_field,
    prob_to_uint8,
    run_inference,
    voxel_metrics,
    write_candidates_csv,
)
from src_train.luna import LunaFolder
from src_train.model import ModelConfig, build_model, save_checkpoint

FLIPPED = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)
PERMUTED = (0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, -1.0)


def random_model(seed: int = 0) -> nn.Module:
    """A U-Net with random weights and input statistics that keep logits moderate."""
    torch.manual_seed(seed)
    model = build_model(ModelConfig())
    with torch.no_grad():
        model.input_norm.running_mean.fill_(-500.0)
        model.input_norm.running_var.fill_(500.0**2)
    return model.eval()


def chest(shape: tuple[int, int, int], direction: tuple[float, ...] | None = None) -> CtVolume:
    """Air around an elliptic body with two dark lungs and a few dense blobs; HU int16."""
    rng = np.random.default_rng(1)
    z, y, x = shape
    yy, xx = np.ogrid[:y, :x]
    hu = np.full(shape, -1000, dtype=np.int16)
    body = ((yy - y / 2) / (0.3 * y)) ** 2 + ((xx - x / 2) / (0.3 * x)) ** 2 < 1
    lungs = ((yy - y / 2) / (0.2 * y)) ** 2 + ((np.abs(xx - x / 2) - 0.13 * x) / (0.1 * x)) ** 2 < 1
    hu[:, body] = 30
    hu[:, lungs] = -850
    hu += rng.integers(-15, 15, size=shape, dtype=np.int16)
    hu[z // 2, y // 2 - 2 : y // 2 + 2, x // 2 - 2 : x // 2 + 2] = 60
    geometry = Geometry(
        shape_irc=shape,
        origin_xyz_mm=(-100.0, 50.0, 20.0),
        spacing_xyz_mm=(0.8, 0.8, 2.0),
        direction=direction or (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0),
    )
    return CtVolume(hu=hu, geometry=geometry, series_uid="chest")


def reference_prob(model: nn.Module, ct: CtVolume) -> np.ndarray:
    """Slice-by-slice fp32 probabilities on whole slices, the plain way."""
    with torch.no_grad():
        x = torch.from_numpy(context_stack(ct.hu, np.arange(ct.hu.shape[0])))
        return torch.sigmoid(model(x))[:, 0].numpy()


# ---------------------------------------------------------------------------------------------
# run_inference
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(9, 44, 52), (3, 37, 41), (1, 24, 24)])
def test_shapes_dtypes_and_values_match_a_plain_pass(shape: tuple[int, int, int]) -> None:
    """Odd sizes (not multiples of 8) and series thinner than 7 slices come back whole."""
    model = random_model()
    ct = chest(shape)
    res = run_inference(ct, model, device="cpu", precision="fp32", crop_to_body=False)
    assert res.prob.shape == shape and res.prob.dtype == np.float16
    assert res.mask.shape == shape and res.mask.dtype == bool
    np.testing.assert_array_equal(res.mask, res.prob >= np.float16(0.5))
    np.testing.assert_allclose(res.prob, reference_prob(model, ct), atol=2e-3)
    assert model.training is False and isinstance(model.down[0][1], nn.BatchNorm2d)  # untouched


def test_batch_size_and_crop_do_not_change_the_result() -> None:
    model = random_model(3)
    ct = chest((7, 192, 224))
    ref = reference_prob(model, ct)
    for batch in (1, 3):
        res = run_inference(ct, model, device="cpu", precision="fp32", batch_size=batch)
        r0, r1, c0, c1 = res.settings.crop_irc
        assert (r1 - r0) * (c1 - c0) < ct.hu.shape[1] * ct.hu.shape[2]  # the crop saved work
        body = np.zeros(ct.hu.shape, dtype=bool)
        body[
            :, r0 + BODY_MARGIN_PX : r1 - BODY_MARGIN_PX, c0 + BODY_MARGIN_PX : c1 - BODY_MARGIN_PX
        ] = True
        assert (ct.hu[:, ~body[0]] <= -500).all()  # everything dense lies inside
        np.testing.assert_allclose(res.prob[body], ref[body], atol=2e-3)
        assert res.settings.batch_size == batch


def test_bf16_is_close_to_fp32() -> None:
    model = random_model(5)
    ct = chest((5, 48, 48))
    fp32 = run_inference(ct, model, device="cpu", precision="fp32").prob.astype(np.float32)
    bf16 = run_inference(ct, model, device="cpu", precision="bf16").prob.astype(np.float32)
    assert np.abs(fp32 - bf16).mean() < 0.02


def test_progress_reaches_the_total_and_cancel_stops() -> None:
    model = random_model()
    ct = chest((10, 32, 32))
    calls: list[tuple[int, int]] = []
    run_inference(
        ct, model, device="cpu", batch_size=3, progress=lambda d, t, m: calls.append((d, t))
    )
    assert calls == [(3, 10), (6, 10), (9, 10), (10, 10)]
    polls = iter([False, False, True])
    with pytest.raises(CancelledError, match="after 6 slices"):
        run_inference(ct, model, device="cpu", batch_size=3, should_stop=lambda: next(polls))


class OomAbove(nn.Module):
    """Raises an out-of-memory error for batches larger than ``limit`` (as CUDA would)."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.inner = random_model()
        self.limit = limit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return self.inner(x)


def test_out_of_memory_halves_the_batch() -> None:
    ct = chest((12, 32, 32))
    res = run_inference(ct, OomAbove(2), device="cpu", batch_size=8, precision="fp32")
    assert res.settings.batch_size == 2
    np.testing.assert_allclose(res.prob, reference_prob(OomAbove(99).inner, ct), atol=2e-3)
    with pytest.raises(ConfigError, match="even with one slice"):
        run_inference(ct, OomAbove(0), device="cpu", batch_size=4)


def test_bad_options_raise_config_errors() -> None:
    ct = chest((3, 24, 24))
    with pytest.raises(ConfigError, match="threshold"):
        run_inference(ct, random_model(), threshold=1.5)
    with pytest.raises(ConfigError, match="fp16"):
        run_inference(ct, random_model(), device="cpu", precision="fp16")
    with pytest.raises(ConfigError, match="batch_size"):
        run_inference(ct, random_model(), batch_size=0)


# ---------------------------------------------------------------------------------------------
# Error volume and voxel metrics
# ---------------------------------------------------------------------------------------------
def test_error_volume_and_metrics() -> None:
    pred = np.zeros((2, 3, 4), dtype=bool)
    truth = np.zeros_like(pred)
    pred[0, 0, :3] = True  # 3 predicted
    truth[0, 0, 1:4] = True  # 3 true, 2 shared
    err = error_volume(pred, truth)
    assert err.dtype == np.uint8
    assert err[0, 0].tolist() == [ERROR_FP, ERROR_TP, ERROR_TP, ERROR_FN]
    assert np.count_nonzero(err) == 4
    m = voxel_metrics(pred, truth)
    assert (m["tp"], m["fn"], m["fp"]) == (2, 1, 1)
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 3)
    assert m["dice"] == pytest.approx(2 / 3)
    empty = voxel_metrics(np.zeros_like(pred), np.zeros_like(pred))
    assert math.isnan(empty["recall"]) and math.isnan(empty["dice"])
    with pytest.raises(GeometryError):
        error_volume(pred, truth[:1])


# ---------------------------------------------------------------------------------------------
# Candidate grouping
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("direction", [None, FLIPPED, PERMUTED])
def test_candidate_centers_sizes_and_order(direction: tuple[float, ...] | None) -> None:
    geometry = Geometry(
        shape_irc=(10, 20, 30),
        origin_xyz_mm=(10.0, -20.0, 5.0),
        spacing_xyz_mm=(0.5, 0.75, 2.0),
        direction=direction or (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0),
    )
    prob = np.zeros(geometry.shape_irc, dtype=np.float16)
    prob[2:5, 3:6, 4:7] = 0.6  # cube of 27 voxels centered at (3, 4, 5)
    prob[2:5, 3:6, 6] = 0.9  # heavier last column: center moves towards col 6
    prob[8, 15, 25] = 0.95  # single voxel
    mask = prob >= 0.5
    every = CandidateConfig(min_diameter_mm=0.0, score="max")
    cands = group_candidates(prob, mask, geometry, "s", every)
    assert [c.voxel_count for c in cands] == [1, 27]  # most probable first
    assert [c.voxel_count for c in group_candidates(prob, mask, geometry, "s")] == [27]
    single, cube = cands
    w = np.array([0.6, 0.6, 0.9], dtype=np.float16).astype(np.float64)
    expected_col = float((w * [4, 5, 6]).sum() / w.sum())
    np.testing.assert_allclose(cube.center_irc, (3.0, 4.0, expected_col), atol=1e-6)
    # World center by hand: origin + direction @ (spacing * (col, row, index)).
    d = np.asarray(geometry.direction).reshape(3, 3)
    for cand, irc in ((cube, (3.0, 4.0, expected_col)), (single, (8.0, 15.0, 25.0))):
        local = np.array([irc[2] * 0.5, irc[1] * 0.75, irc[0] * 2.0])
        np.testing.assert_allclose(
            cand.center_xyz_mm, np.add(geometry.origin_xyz_mm, d @ local), atol=1e-6
        )
    assert cube.diameter_mm == pytest.approx((6 * 27 * 0.75 / math.pi) ** (1 / 3))
    assert cube.probability == pytest.approx(0.9, abs=1e-3)
    assert single.probability == pytest.approx(0.95, abs=1e-3)
    assert cube.mean_probability == pytest.approx((18 * 0.6 + 9 * 0.9) / 27, abs=1e-3)


def test_connectivity_and_filters() -> None:
    geometry = Geometry((6, 6, 6), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    mask = np.zeros(geometry.shape_irc, dtype=bool)
    mask[1, 1, 1] = mask[2, 2, 2] = True  # corner neighbours
    mask[4:6, 4:6, 4:6] = True
    prob = mask.astype(np.float32) * 0.7
    prob[4, 4, 4] = 0.9
    every = CandidateConfig(min_diameter_mm=0.0, score="max")
    assert len(group_candidates(prob, mask, geometry, "s", every)) == 2
    six = replace(every, connectivity=6)
    assert len(group_candidates(prob, mask, geometry, "s", six)) == 3
    big_only = group_candidates(prob, mask, geometry, "s", replace(every, min_voxels=3))
    assert [c.voxel_count for c in big_only] == [8]
    sure = group_candidates(prob, mask, geometry, "s", replace(every, min_probability=0.8))
    assert [c.voxel_count for c in sure] == [8]
    assert group_candidates(prob, np.zeros_like(mask), geometry, "s") == []
    with pytest.raises(ConfigError):
        CandidateConfig(connectivity=18)


def test_candidates_found_in_a_run_point_at_the_blob() -> None:
    """A model that fires on dense voxels: the candidate lands on the blob, in world mm."""

    class Dense(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return (x[:, 3:4] - 45.0) * 10.0  # center slice above 45 HU -> probability ~1

    ct = chest((9, 40, 48), direction=FLIPPED)
    res = run_inference(ct, Dense(), device="cpu", precision="fp32")
    blob = [c for c in res.candidates if c.voxel_count >= 8]
    assert len(blob) == 1
    np.testing.assert_allclose(blob[0].center_irc, (4.0, 19.5, 23.5), atol=0.1)
    np.testing.assert_allclose(
        blob[0].center_xyz_mm, ct.geometry.irc_to_xyz((4.0, 19.5, 23.5)), atol=0.1
    )


def test_candidates_csv_round_trip_and_no_overwrite(tmp_path: Path) -> None:
    cands = [CandidateNodule("s1", (1.5, -2.25, 3.0), (1.0, 2.0, 3.0), 6.2, 40, 0.875, 0.7)]
    path = write_candidates_csv(tmp_path / "candidates.csv", cands)
    back = read_submission(path)
    assert back[0].series_uid == "s1" and back[0].center_xyz_mm == (1.5, -2.25, 3.0)
    assert back[0].probability == pytest.approx(0.875)
    with pytest.raises(OutputExistsError):
        write_candidates_csv(path, cands)
    assert prob_to_uint8(np.array([[[0.0, 0.5, 1.0]]], dtype=np.float16)).tolist() == [
        [[0, 128, 255]]
    ]


# ---------------------------------------------------------------------------------------------
# lunaseg infer / eval
# ---------------------------------------------------------------------------------------------
def _checkpoint(tmp_path: Path, name: str = "random.pt") -> Path:
    path = tmp_path / name
    save_checkpoint(path, random_model(), ModelConfig())
    return path


def _as_if_saved_on_a_gpu(src: Path, dest: Path) -> None:
    """Copy a checkpoint, relabelling its tensors' storage location as ``cuda:0``."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dest, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename.endswith("data.pkl"):
                data = data.replace(b"X\x03\x00\x00\x00cpu", b"X\x06\x00\x00\x00cuda:0")
            zout.writestr(item, data)


def test_cli_infer_then_eval_on_a_luna_folder(
    tiny_synth_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = _checkpoint(tmp_path)
    gpu_ckpt = tmp_path / "gpu.pt"
    _as_if_saved_on_a_gpu(ckpt, gpu_ckpt)
    with pytest.raises(RuntimeError):  # proves the relabelling: a plain load needs CUDA
        torch.load(gpu_ckpt, weights_only=True)
    out = tmp_path / "out"
    args = ["infer", str(tiny_synth_dir), "--out", str(out), "--limit", "2"]
    assert main([*args, "--checkpoint", str(gpu_ckpt), "--device", "cpu"]) == 0
    uids = LunaFolder(tiny_synth_dir).series_uids[:2]
    for uid in uids:
        pred = load_ct(out / f"{uid}_pred.mhd")
        prob = load_ct(out / f"{uid}_prob.mhd")
        err = load_ct(out / f"{uid}_error.mhd")
        ct = load_ct(LunaFolder(tiny_synth_dir).series_path(uid))
        assert pred.geometry == ct.geometry == prob.geometry == err.geometry
        assert set(np.unique(pred.hu)) <= {0, 1} and set(np.unique(err.hu)) <= {0, 1, 2, 3}
        assert ((prob.hu >= 128) == (pred.hu == 1)).mean() > 0.999
    assert (out / "seriesuids.csv").read_text().split() == uids
    marks = read_submission(out / "candidates.csv")
    assert {m.series_uid for m in marks} <= set(uids)
    printed = capsys.readouterr().out
    assert "nodule recall" in printed and "CPM" in printed

    # Nothing is overwritten silently.
    before = (out / "candidates.csv").read_bytes()
    assert main([*args, "--checkpoint", str(ckpt)]) == 2
    assert "already exist" in capsys.readouterr().err
    assert (out / "candidates.csv").read_bytes() == before

    ann = str(tiny_synth_dir / "annotations.csv")
    assert main(["eval", "--annotations", ann, "--candidates", str(out / "candidates.csv")]) == 0
    report = capsys.readouterr().out
    assert "seriesuids.csv" in report and "CPM" in report and "2 scans" in report
    assert (out / "froc.csv").is_file() and (out / "froc.png").is_file()
    assert main(["eval", "--annotations", ann, "--candidates", str(out / "candidates.csv")]) == 2


def test_cli_infer_single_series_and_bad_input(
    tiny_synth_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = _checkpoint(tmp_path)
    folder = LunaFolder(tiny_synth_dir)
    uid = folder.series_uids[0]
    ct = load_ct(folder.series_path(uid))
    nifti = save_volume(ct.hu, ct.geometry, tmp_path / "scan.nii.gz")
    out = tmp_path / "single"
    assert main(["infer", str(nifti), "--out", str(out), "--checkpoint", str(ckpt)]) == 0
    assert (out / "scan_pred.mhd").is_file() and not (out / "scan_error.mhd").exists()
    capsys.readouterr()

    bad = tmp_path / "notes.pt"
    bad.write_text("not a checkpoint")
    foreign = tmp_path / "foreign.pt"
    torch.save({"conv.weight": torch.zeros(3)}, foreign)
    cases = [
        (["--checkpoint", str(bad)], "notes.pt"),
        (["--checkpoint", str(foreign)], "not a LunaSeg checkpoint"),
        (["--checkpoint", str(ckpt), "--series", "1.2.3.nope"], "1.2.3.nope"),
        (["--checkpoint", str(tmp_path / "missing.pt")], "does not exist"),
    ]
    for extra, needle in cases:
        rc = main(["infer", str(tiny_synth_dir), "--out", str(tmp_path / "x"), *extra])
        assert rc == 2
        assert needle in capsys.readouterr().err
    assert not (tmp_path / "x" / "candidates.csv").exists()


def test_infer_to_folder_writes_every_output_and_scores_what_it_wrote(
    tiny_synth_dir: Path, tmp_path: Path
) -> None:
    folder = LunaFolder(tiny_synth_dir)
    uids = folder.series_uids[:2]
    out = tmp_path / "out"
    events: list[InferPlan | SeriesReport] = []
    ticks: list[tuple[int, int]] = []
    summary = infer_to_folder(
        tiny_synth_dir,
        out,
        checkpoint=DEMO_CHECKPOINT,
        limit=2,
        device="cpu",
        progress=lambda done, total, _msg: ticks.append((done, total)),
        on_start=events.append,
        on_series=events.append,
    )
    plan = summary.plan
    assert events == [plan, *summary.series]  # the plan first, then one report per series
    assert [uid for uid, _ in plan.series] == [r.series_uid for r in summary.series] == uids
    assert plan.checkpoint == DEMO_CHECKPOINT and plan.model_config == ModelConfig()
    assert plan.annotations_path == folder.annotations_path
    for uid, report in zip(uids, summary.series, strict=True):
        ct = load_ct(folder.series_path(uid))
        assert report.n_slices == ct.shape_irc[0] and (ct.shape_irc[0], ct.shape_irc[0]) in ticks
        for path in (report.outputs.prob, report.outputs.pred, report.outputs.error):
            assert path.parent == out and path.name.startswith(uid)
            assert load_ct(path).geometry == ct.geometry
        assert report.voxel_metrics is not None and 0.0 <= report.voxel_metrics["recall"] <= 1.0
        assert report.describe().startswith(f"{uid}: {ct.shape_irc[0]} slices in ")

    # The summary scores exactly the files it wrote, as 'lunaseg eval' would read them.
    marks = read_submission(summary.candidates_csv)
    assert len(marks) == summary.n_candidates == sum(r.n_candidates for r in summary.series)
    assert read_series_list(plan.series_list) == uids
    nodules = [n for uid in uids for n in folder.nodules(uid) if n.diameter_mm]
    froc = evaluate_froc(nodules, marks, series_uids=uids)
    assert summary.froc is not None and froc.n_nodules == summary.froc.n_nodules > 0
    assert summary.froc.recall == froc.recall and summary.froc.cpm == pytest.approx(froc.cpm)
    assert summary.seconds > 0

    # Every output is checked before anything is loaded or written.
    before = {p: p.stat().st_mtime_ns for p in out.iterdir()}
    started: list[InferPlan] = []
    with pytest.raises(OutputExistsError, match="already exist"):
        infer_to_folder(tiny_synth_dir, out, series=uids[1:], device="cpu", on_start=started.append)
    assert not started and {p: p.stat().st_mtime_ns for p in out.iterdir()} == before

    # Without truth: no error volumes, no score; a stop leaves no series list.
    bare = infer_to_folder(
        tiny_synth_dir, tmp_path / "bare", series=uids[:1], device="cpu", with_truth=False
    )
    assert bare.froc is None and bare.plan.annotations_path is None
    assert bare.series[0].voxel_metrics is None and not bare.series[0].outputs.error.exists()
    stopped = tmp_path / "stopped"
    with pytest.raises(CancelledError):
        infer_to_folder(tiny_synth_dir, stopped, limit=1, device="cpu", should_stop=lambda: True)
    assert not (stopped / "seriesuids.csv").exists()


def test_lung_field_keeps_the_lungs_and_what_is_inside_them() -> None:
    ct = chest((4, 64, 80))
    hu = ct.hu.copy()
    hu[1, 30:34, 28:32] = 50  # a solid nodule inside the left lung
    field = lung_field(hu, ct.geometry.spacing_irc_mm)
    lungs = (hu > -900) & (hu < -400)
    assert field[:, 32, 30].all()  # the lung and the nodule inside it
    assert not field[:, 0, 0].any() and not field[:, 32, 40].any()  # outside air, mediastinum
    assert field[lungs].mean() > 0.9  # computed on every second pixel: edges may be lost
    wide = lung_field(hu, ct.geometry.spacing_irc_mm, margin_mm=5.0)
    assert wide[lungs].all() and (wide | ~field).all() and not wide[:, 0, 0].any()


def test_scores_voxel_threshold_and_lung_margin() -> None:
    ct = chest((3, 64, 80))
    prob = np.zeros(ct.hu.shape, dtype=np.float32)
    prob[1, 30:33, 28:31] = 0.6  # in the left lung
    prob[1, 31, 29] = 1.0
    prob[1, 30:33, 38:42] = 0.9  # mediastinum, between the lungs
    mask = prob >= 0.5
    geo = ct.geometry
    every = CandidateConfig(min_diameter_mm=0.0, score="max")
    both = group_candidates(prob, mask, geo, "s", every)
    assert [c.voxel_count for c in both] == [9, 12]
    by_mean = group_candidates(prob, mask, geo, "s", replace(every, score="mean"))
    assert [c.voxel_count for c in by_mean] == [12, 9]
    assert by_mean[1].probability == pytest.approx((8 * 0.6 + 1.0) / 9)
    assert by_mean[1].max_probability == pytest.approx(1.0)
    strict = group_candidates(prob, mask, geo, "s", replace(every, voxel_threshold=0.95))
    assert [c.voxel_count for c in strict] == [1]
    in_lung = group_candidates(prob, mask, geo, "s", replace(every, lung_margin_mm=0.0), hu=ct.hu)
    assert [c.voxel_count for c in in_lung] == [9]
    with pytest.raises(ConfigError):
        CandidateConfig(score="median")


def test_shipped_demo_checkpoint_finds_the_nodules_of_fresh_scans() -> None:
    """The demo U-Net on a CPU finds the nodules of small synthetic scans it never saw."""
    from src_train.evaluate import Candidate
    from src_train.infer import DEMO_CHECKPOINT
    from src_train.luna import Nodule
    from src_train.model import load_model
    from src_train.synth import SynthConfig, generate_scan

    model, config = load_model(DEMO_CHECKPOINT, device="cpu")
    assert config == ModelConfig()
    small = replace(
        SynthConfig(),
        inplane_px_range=(256, 256),
        inplane_px_multiple=1,
        slices_range=(48, 48),
        diameter_mm_range=(5.0, 20.0),
        nodules_per_scan_range=(3, 4),
    )
    nodules, marks, uids = [], [], []
    for seed in (11, 12, 13):
        scan = generate_scan(f"fresh.{seed}", seed, small)
        result = run_inference(scan.ct, model, device="cpu")
        assert len(result.candidates) < 100  # a short list, not thousands
        uids.append(scan.ct.series_uid)
        nodules += [Nodule(n.series_uid, n.center_xyz_mm, n.diameter_mm) for n in scan.nodules]
        marks += [
            Candidate(c.series_uid, c.center_xyz_mm, c.probability) for c in result.candidates
        ]
    froc = evaluate_froc(nodules, marks, series_uids=uids)
    assert froc.n_nodules >= 9
    assert froc.recall >= 0.7, froc.summary()


def test_cli_infer_on_a_dicom_folder(tmp_path: Path) -> None:
    import SimpleITK as sitk

    ct = chest((9, 48, 48))
    image = sitk.GetImageFromArray(ct.hu)
    ct.geometry.apply_to(image)
    folder = tmp_path / "dicom"
    folder.mkdir()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for i in range(image.GetDepth()):
        part = image[:, :, i]
        position = image.TransformIndexToPhysicalPoint((0, 0, i))
        part.SetMetaData("0008|0060", "CT")
        part.SetMetaData("0020|000e", "1.2.826.0.1.3680043.2.1125.1.42")
        part.SetMetaData("0020|0032", "\\".join(map(str, position)))
        part.SetMetaData("0020|0013", str(i))
        writer.SetFileName(str(folder / f"{i:03d}.dcm"))
        writer.Execute(part)
    out = tmp_path / "out"
    assert (
        main(["infer", str(folder), "--out", str(out), "--checkpoint", str(_checkpoint(tmp_path))])
        == 0
    )
    pred = load_ct(out / "dicom_pred.mhd")
    assert pred.shape_irc == ct.shape_irc
    np.testing.assert_allclose(pred.geometry.origin_xyz_mm, ct.geometry.origin_xyz_mm, atol=1e-3)


def test_the_measured_choice_is_reused_for_similar_series() -> None:
    from src_train import infer

    infer._TUNERS.clear()
    first = run_inference(chest((40, 40, 40)), random_model(), device="cpu")
    second = run_inference(chest((12, 40, 44)), random_model(), device="cpu")
    assert first.settings.tuned and not second.settings.tuned
    assert (first.settings.threads, first.settings.channels_last, first.settings.batch_size) == (
        second.settings.threads,
        second.settings.channels_last,
        second.settings.batch_size,
    )


def test_more_components_than_a_uint16_label_holds() -> None:
    geometry = Geometry((8, 300, 300), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    mask = np.zeros(geometry.shape_irc, dtype=bool)
    mask[::2, ::2, ::2] = True  # 90,000 isolated voxels
    prob = mask.astype(np.float16)
    cands = group_candidates(prob, mask, geometry, "s", CandidateConfig(min_diameter_mm=0.0))
    assert len(cands) == 90_000 and {c.voxel_count for c in cands} == {1}

"""Whole runs (infer_to_folder, lunaseg infer/eval): every output, scores, bad input."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from models import as_if_saved_on_a_gpu, checkpoint_file, chest, run_options

from src_train.cli import main
from src_train.commands.infer_folder import DEMO_CHECKPOINT, InferRunOptions, infer_to_folder
from src_train.ct import load_ct, save_volume
from src_train.errors import CancelledError, OutputExistsError
from src_train.evaluate import evaluate_froc, read_series_list, read_submission
from src_train.infer import InferenceOptions, InferPlan, SeriesReport
from src_train.luna import LunaFolder
from src_train.model import ModelConfig, load_checkpoint
from src_train.records.threshold import checkpoint_threshold


def test_cli_infer_then_eval_on_a_luna_folder(
    tiny_synth_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = checkpoint_file(tmp_path)
    gpu_ckpt = tmp_path / "gpu.pt"
    as_if_saved_on_a_gpu(ckpt, gpu_ckpt)
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

    # Nothing is overwritten silently: another checkpoint is refused, naming the difference.
    before = (out / "candidates.csv").read_bytes()
    assert main([*args, "--checkpoint", str(ckpt)]) == 2
    assert "checkpoint_sha1: recorded" in capsys.readouterr().err
    assert (out / "candidates.csv").read_bytes() == before

    ann = str(tiny_synth_dir / "annotations.csv")
    assert main(["eval", "--annotations", ann, "--candidates", str(out / "candidates.csv")]) == 0
    report = capsys.readouterr().out
    assert "seriesuids.csv" in report and "CPM" in report and "2 scans" in report
    assert (out / "froc.csv").is_file() and (out / "froc.png").is_file()
    assert main(["eval", "--annotations", ann, "--candidates", str(out / "candidates.csv")]) == 2


def test_cli_infer_says_each_series_and_each_missing_series_once(
    tiny_synth_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    import logging
    import shutil

    data = tmp_path / "data"
    shutil.copytree(tiny_synth_dir, data)
    absent = "9.9.1"
    with (data / "annotations.csv").open("a", encoding="utf-8") as handle:
        handle.write(f"{absent},0,0,0,5\n")  # a partial download
    args = ["infer", str(data), "--out", str(tmp_path / "out"), "--limit", "2"]
    with caplog.at_level(logging.INFO):
        assert main([*args, "--checkpoint", str(checkpoint_file(tmp_path))]) == 0
    shown = capsys.readouterr().out.splitlines() + [r.getMessage() for r in caplog.records]
    for uid in [*LunaFolder(data).series_uids[:2], absent]:
        assert sum(uid in line for line in shown) == 1, (uid, shown)


def test_cli_infer_single_series_and_bad_input(
    tiny_synth_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = checkpoint_file(tmp_path)
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
        run_options(checkpoint=str(DEMO_CHECKPOINT), limit=2),
        progress=lambda done, total, _msg: ticks.append((done, total)),
        on_start=events.append,
        on_series=events.append,
    )
    plan = summary.plan
    assert events == [plan, *summary.series]  # the plan first, then one report per series
    assert [uid for uid, _ in plan.series] == [r.series_uid for r in summary.series] == uids
    assert [uid for uid, _ in plan.todo] == uids and plan.skipped == [] and summary.complete
    assert plan.checkpoint == DEMO_CHECKPOINT
    assert plan.model_config == replace(ModelConfig(), context_mm=2.0)  # the demo recipe's
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

    # Every output is checked before anything is written: other settings are refused.
    before = {p: p.stat().st_mtime_ns for p in out.iterdir()}
    started: list[InferPlan] = []
    applied = checkpoint_threshold(load_checkpoint(DEMO_CHECKPOINT))  # none was asked for
    refused = rf"inference\.threshold: recorded {applied:g}, now 0\.6"
    with pytest.raises(OutputExistsError, match=refused):
        infer_to_folder(
            tiny_synth_dir,
            out,
            InferRunOptions(limit=2, inference=InferenceOptions(device="cpu", threshold=0.6)),
            on_start=started.append,
        )
    assert not started and {p: p.stat().st_mtime_ns for p in out.iterdir()} == before

    # Without truth: no error volumes, no score; a stop leaves no tables.
    bare = infer_to_folder(
        tiny_synth_dir, tmp_path / "bare", run_options(series=tuple(uids[:1]), with_truth=False)
    )
    assert bare.froc is None and bare.plan.annotations_path is None
    assert bare.series[0].voxel_metrics is None and not bare.series[0].outputs.error.exists()
    stopped = tmp_path / "stopped"
    with pytest.raises(CancelledError):
        infer_to_folder(tiny_synth_dir, stopped, run_options(limit=1), should_stop=lambda: True)
    assert not (stopped / "seriesuids.csv").exists() and not (stopped / "candidates.csv").exists()


def test_shipped_demo_checkpoint_finds_the_nodules_of_fresh_scans() -> None:
    """The demo detector (segmenter + ranker) on a CPU finds the nodules of small synthetic
    scans it never saw, in a short candidate list (the 30 most probable after the ranker)
    whose top entries are nodules; the segmenter itself marks fewer than 40 spots per scan
    (measured with the demo of issue 22: 23, 26 and 26; recall 10/11, CPM 0.740)."""
    from src_train.commands.infer_folder import DEMO_CHECKPOINT
    from src_train.evaluate import Candidate
    from src_train.infer import load_detector, run_detection
    from src_train.luna import Nodule
    from src_train.synth import SynthConfig, generate_scan

    detector = load_detector(DEMO_CHECKPOINT, device="cpu")
    assert detector.model_config == replace(ModelConfig(), context_mm=2.0)
    assert detector.ranker is not None
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
        result = run_detection(scan.ct, detector, InferenceOptions(device="cpu"))
        assert len(result.candidates) <= 30  # the detector's list
        assert len(result.candidates) + result.left_out < 40  # the segmenter's, before the cut
        uids.append(scan.ct.series_uid)
        nodules += [Nodule(n.series_uid, n.center_xyz_mm, n.diameter_mm) for n in scan.nodules]
        marks += [
            Candidate(c.series_uid, c.center_xyz_mm, c.probability) for c in result.candidates
        ]
    froc = evaluate_froc(nodules, marks, series_uids=uids)
    assert froc.n_nodules >= 9
    assert froc.recall >= 0.8, froc.summary()
    assert froc.cpm >= 0.6, froc.summary()  # ranked: nodules before the false positives


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
        main(
            [
                "infer",
                str(folder),
                "--out",
                str(out),
                "--checkpoint",
                str(checkpoint_file(tmp_path)),
            ]
        )
        == 0
    )
    # named by the series the scan carries (its DICOM SeriesInstanceUID), not by its folder
    pred = load_ct(out / "1.2.826.0.1.3680043.2.1125.1.42_pred.mhd")
    assert pred.shape_irc == ct.shape_irc
    np.testing.assert_allclose(pred.geometry.origin_xyz_mm, ct.geometry.origin_xyz_mm, atol=1e-3)


def test_a_2d_image_checkpoint_is_refused_on_ct_series(
    tiny_synth_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 21 defect 7: a lunaseg compare (RGB) checkpoint ran on CT, its 3 colour channels
    taken as context slices: exit 0 and hundreds of candidates."""
    from src_train.model import build_model, save_checkpoint

    rgb = tmp_path / "checkpoint_best.pt"
    config = ModelConfig(in_channels=3, depth=2, filters=4)
    save_checkpoint(rgb, build_model(config), config, extra={"image_size": 64})
    out = tmp_path / "out"
    rc = main(["infer", str(tiny_synth_dir), "--out", str(out), "--checkpoint", str(rgb)])
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert str(rgb) in err and "2-D image model" in err and "CT" in err
    assert not out.exists(), "refused before anything was written"


def test_infer_reviewed_scores_against_the_corrected_voxels(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 21 defect 8: --reviewed regrew masks from the reviewed nodule list, ignoring the
    voxels a reviewer painted; the error volume must be TP/FN exactly on the painted voxels."""
    from tiny_luna import SPECS, sphere, write_tiny_luna

    from src_train.reviews import record_correction, record_verdict, reviews_dir

    write_tiny_luna(tmp_path / "luna", SPECS[:1])
    folder = LunaFolder(tmp_path / "luna")
    ct = folder.load("1.1")
    a, b = folder.nodules("1.1")
    painted = sphere(ct.shape_irc, (5, 20, 22), 2) | sphere(ct.shape_irc, (5, 24, 22), 1)
    reviews = reviews_dir(folder.root)
    record_correction(reviews, ct.geometry, "1.1", a.center_xyz_mm, 6.0, painted, "ann")
    record_verdict(reviews, "1.1", b.center_xyz_mm, 6.0, "rejected", "ann")
    out = tmp_path / "out"
    args = ["infer", str(folder.root), "--out", str(out), "--reviewed", "--device", "cpu"]
    assert main([*args, "--checkpoint", str(checkpoint_file(tmp_path))]) == 0
    errors = load_ct(out / "1.1_error.mhd").hu
    truth = (errors == 1) | (errors == 2)  # TP or FN: the ground truth's voxels
    np.testing.assert_array_equal(truth, painted)

"""The viewer's Qt-free models driven without a screen: the Inference model (operating point,
TP/FP/unscored, error volume against the run's reviewed truth, the candidate a view is on) and
the Mask QA model (threshold, method, Dice, ``nodules.csv``)."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest

from src_train.colors import ERROR_FN, ERROR_FP, ERROR_TP
from src_train.luna import LunaFolder, Nodule


@pytest.fixture(scope="module")
def series(tiny_synth_dir: Path):  # type: ignore[no-untyped-def]
    folder = LunaFolder(tiny_synth_dir)
    uid = next(u for u in folder.series_uids if len(folder.nodules(u)) >= 2)
    return folder, uid


def _result_on(ct, truth_mask: np.ndarray, fp_center_irc, probs=(0.9, 0.3)):  # type: ignore[no-untyped-def]
    """A run that found the truth's first component (score probs[0]) and a false blob."""
    from scipy import ndimage

    from src_train.infer import InferenceResult
    from src_train.infer.candidates import group_candidates

    labels, _ = ndimage.label(truth_mask)
    mask = labels == 1
    z, r, c = fp_center_irc
    mask[z - 1 : z + 2, r - 2 : r + 3, c - 2 : c + 3] = True
    prob = np.where(mask, np.float16(probs[1]), np.float16(0.0)).astype(np.float16)
    prob[labels == 1] = probs[0]
    candidates = group_candidates(prob, mask, ct.geometry, ct.series_uid)
    return InferenceResult(prob=prob, mask=mask, candidates=candidates, seconds=0.1)


def _free_voxel(truth_mask: np.ndarray) -> tuple[int, int, int]:
    """A voxel far (>= 6 voxels) from every truth voxel and from the volume's edge."""
    from scipy import ndimage

    far = ndimage.distance_transform_edt(~truth_mask) > 6
    far[:3], far[-3:], far[:, :6], far[:, -6:], far[:, :, :6], far[:, :, -6:] = (False,) * 6
    return tuple(int(v) for v in np.argwhere(far)[len(np.argwhere(far)) // 2])  # type: ignore[return-value]


def test_inference_model_scores_the_operating_point_against_the_reviewed_truth(
    series, tmp_path: Path
) -> None:
    from napari_lunaseg._inference_model import InferenceModel, series_truth
    from src_train.infer.ground_truth import TruthDefinition
    from src_train.reviews import REJECTED, record_verdict, reviews_dir

    folder, uid = series
    root = tmp_path / "data"
    shutil.copytree(folder.root, root)
    nodules = LunaFolder(root).nodules(uid)
    ct = LunaFolder(root).load(uid)
    definition = TruthDefinition()
    plain = series_truth(ct, nodules, root, definition)
    assert plain is not None and len(plain.nodules) == len([n for n in nodules if n.is_nodule])

    # a rejected nodule leaves the ground truth: its voxels are no longer FN
    rejected = nodules[-1]
    reviews_dir(root).mkdir(parents=True, exist_ok=True)
    record_verdict(
        reviews_dir(root), uid, rejected.center_xyz_mm, rejected.diameter_mm, REJECTED, "Ann", ""
    )
    truth = series_truth(ct, nodules, root, definition)
    assert truth is not None and len(truth.nodules) == len(plain.nodules) - 1
    assert truth.mask.sum() < plain.mask.sum()

    model = InferenceModel(score_threshold=0.5)
    result = _result_on(ct, truth.mask, _free_voxel(plain.mask))
    model.set_result(ct, None, result, truth)
    assert [c.probability for c in model.candidates] == pytest.approx([0.9, 0.3], abs=1e-3)
    assert model.outcomes == ["TP", "FP"]
    assert model.kept.tolist() == [True, False]
    errors = model.errors()
    assert errors is not None
    assert not (errors == ERROR_FP).any() and (errors == ERROR_TP).any()
    assert ((errors == ERROR_TP) | (errors == ERROR_FN)).sum() == truth.mask.sum()
    model.set_score_threshold(0.2)  # both kept: the false blob is FP voxels now
    assert (model.errors() == ERROR_FP).sum() == 3 * 5 * 5
    found, total = model.nodule_recall()
    assert (found, total) == (1, len(truth.nodules))
    rows = model.rows()
    assert [r[2] for r in rows] == ["TP", "FP"]
    assert rows[1][1] == round(model.candidates[1].center_irc[0])

    # the view on the false blob's center is on candidate 2, far away on none
    assert model.candidate_at(model.candidates[1].center_xyz_mm) == 1
    assert model.candidate_at((1e4, 1e4, 1e4)) is None


def test_an_excluded_finding_makes_a_candidate_unscored() -> None:
    from src_train.infer.operating_point import candidate_outcomes
    from src_train.records.candidate import CandidateNodule

    def mark(x: float) -> CandidateNodule:
        return CandidateNodule("s", (x, 0.0, 0.0), (0.0, 0.0, 0.0), 5.0, 10, 0.5)

    nodules = [Nodule("s", (0.0, 0.0, 0.0), 8.0)]
    excluded = [Nodule("s", (50.0, 0.0, 0.0), 6.0)]
    marks = [mark(1.0), mark(51.0), mark(100.0)]
    assert candidate_outcomes(marks, nodules, excluded) == ["TP", "unscored", "FP"]


def test_mask_qa_model_regrows_scores_and_writes_the_core_table(series, tmp_path: Path) -> None:
    from napari_lunaseg._mask_qa_model import MaskQAModel
    from src_train.masks import SeriesTruth
    from src_train.masks.table import NODULE_TABLE_COLUMNS

    folder, uid = series
    ct = folder.load(uid)
    nodules = folder.nodules(uid)
    true = folder.truth_path(uid)
    from src_train.ct import load_ct

    truth = SeriesTruth.from_labels(
        uid, load_ct(true).hu.astype(np.uint8), nodules, list(folder.true_nodules(uid))
    )
    model = MaskQAModel()
    model.load(ct, nodules, truth)
    assert len(model.records) == len(nodules)
    dice = model.update_dice()
    assert set(dice) >= {"grow", "ball"} and all(len(v) == len(nodules) for v in dice.values())
    assert max(v for v in dice["grow"] if v is not None) > 0.5  # a real overlap with a true shape
    before = int(model.state.mask.sum())
    boxes, changed = model.set_threshold(-300.0)
    assert changed and boxes and int(model.state.mask.sum()) < before
    assert model.index_of(nodules[1].center_xyz_mm) == 1
    assert model.index_of((1e4, 0.0, 0.0)) is None

    path = model.export_table(tmp_path / "nodules.csv")
    with path.open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(nodules)
    header = list(rows[0])
    assert header[: len(NODULE_TABLE_COLUMNS)] == list(NODULE_TABLE_COLUMNS)
    assert "dice_grow" in header and rows[0]["threshold_hu"] == "-300.0"
    assert float(rows[0]["coordX"]) == pytest.approx(nodules[0].center_xyz_mm[0], abs=1e-3)


def test_the_models_load_without_qt_or_napari() -> None:
    import subprocess
    import sys

    code = (
        "import sys, napari_lunaseg._inference_model, napari_lunaseg._mask_qa_model, "
        "napari_lunaseg._review_model, napari_lunaseg._training_model; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('qtpy', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6', 'napari', 'magicgui')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def _review_model_on(series, tmp_path: Path):  # type: ignore[no-untyped-def]
    """A Review model on a copy of the tiny folder's series (masks as Mask QA grows them)."""
    from napari_lunaseg._mask_qa_model import MaskQAModel
    from napari_lunaseg._review_model import ReviewModel
    from napari_lunaseg._series_view import SeriesView

    folder, uid = series
    root = tmp_path / "data"
    shutil.copytree(folder.root, root)
    copy = LunaFolder(root)
    ct, nodules = copy.load(uid), copy.nodules(uid)
    qa = MaskQAModel()
    qa.load(ct, nodules)
    view = SeriesView(
        ct=ct,
        ct_layer=None,  # type: ignore[arg-type]
        annotations=list(nodules),
        generated=list(qa.records),
        method=qa.method,
        threshold_hu=qa.threshold_hu,
        luna_root=root,
    )
    model = ReviewModel()
    assert model.set_series(view) == (False, [])
    model.recompute()
    return model, view, root


def test_review_model_records_verdicts_undo_and_corrections(series, tmp_path: Path) -> None:
    from napari_lunaseg._review_model import ReviewError
    from src_train.reviews import ACCEPTED, REJECTED, REVIEWS_CSV, read_reviews, reviews_dir

    model, view, root = _review_model_on(series, tmp_path)
    n = len(view.annotations)
    assert model.place() == 0 and len(model.items) == n
    assert f"nodule 1/{n}" in model.current_line()
    with pytest.raises(ReviewError, match="reviewer"):
        model.accept("  ")

    model.accept("Ann", "looks right")
    model.clamp(1)
    model.reject("Ann")
    rows = read_reviews(reviews_dir(root) / REVIEWS_CSV).rows
    assert [r.status for r in rows] == [ACCEPTED, REJECTED]
    assert [r[2] for r in model.table_rows()[:2]] == [ACCEPTED, REJECTED]
    rejected = view.generated[1]
    assert rejected.local_mask.any()
    assert not model.reviewed.mask[rejected.box_slices][rejected.local_mask].any()  # gone
    assert model.first_unreviewed() == (2 if n > 2 else 0)

    model.undo()
    assert model.table_rows()[1][2] == "—" and model.first_unreviewed() == 1
    assert model.reviewed.mask[rejected.box_slices][rejected.local_mask].all()  # back

    # A correction: the nodule becomes exactly the painted cube.
    first = model.items[0]
    z, r, c = np.rint(view.ct.geometry.xyz_to_irc(first.nodule.center_xyz_mm)).astype(int)
    start = model.correction_voxels(first)
    assert start[view.generated[0].box_slices].any()
    painted = np.zeros_like(start)
    painted[z - 1 : z + 2, r - 1 : r + 2, c - 1 : c + 2] = 1
    model.save_correction(first, painted, "Ann")
    box = view.generated[0].box_slices
    assert np.array_equal(model.reviewed.mask[box], painted[box] != 0)


def test_review_model_takes_requests_additions_and_finds_the_next_series(
    series, tmp_path: Path
) -> None:
    from src_train.evaluate.review_requests import REQUEST_ADD, ReviewRequest
    from src_train.reviews import ADDED

    model, view, root = _review_model_on(series, tmp_path)
    uid, n = view.ct.series_uid, len(view.annotations)
    corner = tuple(float(v) for v in view.ct.geometry.irc_to_xyz((3, 10, 10)))
    model.take_requests([ReviewRequest(REQUEST_ADD, uid, corner, 5.0, "a false positive")])
    model.recompute()
    assert len(model.items) == n + 1 and model.items[-1].proposal
    model.clamp(n)
    assert "a false positive" in model.current_line()
    assert model.reject("Ann") is None  # a proposal is dismissed, nothing written
    assert len(model.items) == n and not model.requests

    other = tuple(float(v) for v in view.ct.geometry.irc_to_xyz((4, 12, 12)))
    model.add(other, 7.0, "Ann")
    added = model.item_at(other)
    assert added is not None and added.reviewed is not None and added.reviewed.status == ADDED
    assert added.nodule.diameter_mm == pytest.approx(7.0)

    uids = LunaFolder(root).series_uids
    later = [u for u in uids if u > uid and LunaFolder(root).nodules(u)]
    assert model.neighbour(+1) == (later[0] if later else None)


def test_training_job_command_parses_back_through_the_clis_parser(tmp_path: Path) -> None:
    from napari_lunaseg._training_model import train_command
    from src_train.cli import build_parser
    from src_train.options import options_from_args
    from src_train.train import TrainConfig

    values = {"run_dir": str(tmp_path / "run"), "epochs": 3, "loss": "bce", "overwrite": True}
    values["augment"] = "flip"
    command = train_command(tmp_path / "data", values)
    assert command[:4] == ["-m", "src_train.cli", "train", str(tmp_path / "data")]
    assert command[-1] == "--progress-json"
    args = build_parser().parse_args(command[2:])
    config = options_from_args(TrainConfig, args, data_dir=str(tmp_path / "data"))
    assert (config.run_dir, config.epochs, config.loss) == (str(tmp_path / "run"), 3, "bce")
    assert config.overwrite and set(config.augment_config().enabled) == {"flip"}
    resumed = build_parser().parse_args(train_command(tmp_path / "data", values, resume=True)[2:])
    assert resumed.resume and not getattr(resumed, "overwrite", False)


def test_training_job_follows_events_and_hands_over_only_a_validated_best(tmp_path: Path) -> None:
    import json

    from napari_lunaseg._training_model import (
        EPOCH_HEADER_TIPS,
        EPOCH_HEADERS,
        TrainingJob,
        check_inputs,
    )
    from src_train.records.truth import SPLIT_LABELS
    from src_train.train import BEST

    assert "does not exist" in (check_inputs(str(tmp_path / "nope"), "run", resume=False) or "")
    job = TrainingJob()
    batch = {"kind": "batch", "epoch": 2, "epochs": 3, "batch": 1, "batches": 4}
    batch["metrics"] = {"loss": 0.5}
    epoch = {"kind": "epoch", "epoch": 1, "epochs": 3, "samples_per_s": 12.5}
    epoch["metrics"] = {"train/loss": 0.75, "val/cpm": 0.25, "val/nodule_recall": 0.5}
    best = tmp_path / BEST
    best.write_bytes(b"x")
    latest = {"kind": "checkpoint", "path": str(tmp_path / "checkpoint_latest.pt")}
    lines = [json.dumps(batch), "a log line", json.dumps(epoch), json.dumps(latest)]
    raw = ("\n".join(lines) + "\n" + json.dumps({"kind": "checkpoint", "path": str(best)})).encode()
    shown = job.read_stdout(raw[:40]) + job.read_stdout(raw[40:])  # split inside a line
    assert len(job.events) == 3  # the last line waits for its newline
    assert shown[0].progress == (5, 12) and shown[0].status is not None
    assert "loss 0.5000" in shown[0].status
    assert shown[1].table_changed
    assert f"{SPLIT_LABELS['val']}: CPM 0.2500" in (shown[1].status or "")
    assert all(SPLIT_LABELS["val"] in EPOCH_HEADER_TIPS[h] for h in EPOCH_HEADERS[2:6])
    validating = job.handle_event({"kind": "validation", "epoch": 1, "batch": 2, "batches": 3})
    assert (
        validating.status
        == f"validating epoch 1 on the whole series of the {SPLIT_LABELS['val']}: 2/3"
    )
    rows = job.table_rows()
    assert len(rows) == 1 and len(rows[0]) == len(EPOCH_HEADERS)
    assert rows[0][:4] == ["1", "0.7500", "0.2500", "0.5000"] and rows[0][-1] == "12.5000"

    job.read_stderr("Traceback\n\nValueError: boom\n")
    failed = job.finish(1, crashed=False)
    assert failed.failed and "exited with code 1" in failed.message and "boom" in failed.message
    assert failed.checkpoint is None  # only checkpoint_latest.pt was announced so far

    job.read_stdout(b"\n")  # the best checkpoint's line completes
    job.cancelled = True
    cancelled = job.finish(143, crashed=False)
    assert cancelled.kind == "cancelled" and cancelled.checkpoint == best
    assert job.best_checkpoint == best and job.exit_code == 143
    job.reset()
    assert not job.events and job.best_checkpoint is None and job.exit_code is None


def test_inference_result_line_names_the_checkpoints_sets_as_the_core_does() -> None:
    from types import SimpleNamespace

    from napari_lunaseg._inference_model import InferenceModel
    from src_train.records.contract import DataContract
    from src_train.records.truth import SPLIT_LABELS

    contract = DataContract(("a",), ("b",), {}, {}, test_series=("c",))
    model = InferenceModel()
    model.detector = SimpleNamespace(split_of=contract.split_of)  # type: ignore[assignment]
    lines = {}
    for uid, split in (("a", "train"), ("b", "val"), ("c", "test")):
        model.ct = SimpleNamespace(series_uid=uid)  # type: ignore[assignment]
        lines[split] = model.split_line()
        assert f"checkpoint's {SPLIT_LABELS[split]}:" in lines[split]
    assert "selection set" in lines["val"] and "best epoch" in lines["val"]
    model.ct = SimpleNamespace(series_uid="never seen")  # type: ignore[assignment]
    assert model.split_line() == ""


def test_the_sample_scan_shows_every_nodule_kind_of_the_generator() -> None:
    from napari_lunaseg._sample_data import synthetic_bundle
    from src_train.luna import TRUE_NODULE_KINDS

    bundle = synthetic_bundle()
    assert [n.kind for n in bundle.true_nodules] == list(TRUE_NODULE_KINDS)
    assert len(bundle.nodules) == len(TRUE_NODULE_KINDS)  # each one annotated
    labels = {int(v) for v in np.unique(bundle.truth)} - {0}
    assert labels == {n.label for n in bundle.true_nodules}  # each one drawn in the scan

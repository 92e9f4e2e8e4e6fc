"""Reviewer agreement: kappas computed by hand, Dice between reviewers' own corrections, and
``lunaseg review --agreement`` listing disagreements first."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from qa_scene import IDENTITY, NODULE_D_MM, NODULES, scene_rows, write_folder

from src_train.cli import main
from src_train.luna import LunaFolder
from src_train.reviews import record_correction, record_verdict, reviews_dir, undo
from src_train.reviews.agreement import agreement, cohen_kappa, fleiss_kappa
from src_train.reviews.files import BY_REVIEWER_DIR, reviewer_labels_path


def test_cohen_kappa_by_hand() -> None:
    # A: acc acc rej acc rej acc; B: acc rej rej acc acc acc.
    # agree on items 0, 2, 3, 5: p_o = 4/6. A and B both: acc 4, rej 2.
    # p_e = (4*4 + 2*2) / 36 = 20/36; kappa = (24/36 - 20/36) / (16/36) = 4/16 = 0.25
    a = ["accepted", "accepted", "rejected", "accepted", "rejected", "accepted"]
    b = ["accepted", "rejected", "rejected", "accepted", "accepted", "accepted"]
    assert cohen_kappa(a, b) == pytest.approx(0.25)
    assert cohen_kappa(a, a) == pytest.approx(1.0)
    # every verdict the same: chance agreement is 1, kappa undefined
    assert math.isnan(cohen_kappa(["accepted"] * 3, ["accepted"] * 3))


def test_fleiss_kappa_by_hand() -> None:
    # 3 raters, 4 items: aaa, aar, rrr, arr.
    # P_i = (sum n_ij^2 - 3) / 6: (9-3)/6 = 1, (4+1-3)/6 = 1/3, 1, 1/3 -> mean P = 2/3.
    # shares: a 6/12, r 6/12 -> Pe = 1/2; kappa = (2/3 - 1/2) / (1/2) = 1/3
    items = [["a", "a", "a"], ["a", "a", "r"], ["r", "r", "r"], ["a", "r", "r"]]
    assert fleiss_kappa(items) == pytest.approx(1 / 3)
    assert math.isnan(fleiss_kappa([["a", "a"], ["a", "a"]]))


def _ball(ct_shape: tuple[int, int, int], center: tuple[int, int, int], radius_mm: float):
    zz, yy, xx = np.indices(ct_shape)
    d2 = ((zz - center[0]) * 2.0) ** 2 + (yy - center[1]) ** 2 + (xx - center[2]) ** 2
    return d2 <= radius_mm**2


def _reviewed_folder(tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    """alice and bob judge A (both accept), B (accept / reject), C (both correct, alice half
    of it, bob all of it) and the air row (both reject)."""
    ct = write_folder(tmp_path, IDENTITY)
    rows = scene_rows(ct)
    folder = reviews_dir(tmp_path)
    full = _ball(ct.shape_irc, NODULES["C"], NODULE_D_MM / 2)
    half = full.copy()
    half[:, :, : NODULES["C"][2]] = False
    centers = {"A": rows[0], "B": rows[1], "C": rows[2], "air": rows[3]}
    for name, verdicts in {
        "alice": {"A": "accepted", "B": "accepted", "C": half, "air": "rejected"},
        "bob": {"A": "accepted", "B": "rejected", "C": full, "air": "rejected"},
    }.items():
        for key, verdict in verdicts.items():
            _, center, d = centers[key]
            if isinstance(verdict, str):
                record_verdict(folder, "1.2.3", center, d, verdict, name)
            else:
                record_correction(folder, ct.geometry, "1.2.3", center, d, verdict, name)
    return tmp_path, half, full


def test_agreement_report_kappa_dice_and_order(tmp_path: Path) -> None:
    root, half, full = _reviewed_folder(tmp_path)
    report = agreement(LunaFolder(root))
    assert report.reviewers == ["alice", "bob"]
    # alice: acc acc cor rej, bob: acc rej cor rej -> p_o = 3/4; alice acc 2 cor 1 rej 1, bob
    # acc 1 rej 2 cor 1 -> p_e = (2*1 + 1*1 + 1*2) / 16 = 5/16; kappa = (12/16 - 5/16)/(11/16)
    n, kappa = report.kappa[("alice", "bob")]
    assert n == 4 and kappa == pytest.approx(7 / 11)
    assert report.fleiss is None
    first = report.nodules[0]
    assert not first.agree and first.verdicts == {"alice": "accepted", "bob": "rejected"}
    assert first.dice[("alice", "bob")] == 0.0  # a mask against none
    by_status = {tuple(sorted(set(n.verdicts.values()))): n for n in report.nodules[1:]}
    # both corrected C: alice's half of the ball against bob's whole ball
    expected = 2 * half.sum() / (half.sum() + full.sum())
    assert by_status[("corrected",)].dice[("alice", "bob")] == pytest.approx(expected)
    assert by_status[("accepted",)].dice[("alice", "bob")] == 1.0  # the same grown mask
    assert by_status[("rejected",)].dice[("alice", "bob")] == 1.0  # two empty masks
    assert reviewer_labels_path(reviews_dir(root), "alice", "1.2.3").with_suffix(".zraw").is_file()


def test_fleiss_with_a_third_reviewer(tmp_path: Path) -> None:
    root, _half, full = _reviewed_folder(tmp_path)
    ct = LunaFolder(root).load("1.2.3")
    rows = scene_rows(ct)
    folder = reviews_dir(root)
    for k, status in ((0, "accepted"), (1, "rejected"), (3, "rejected")):
        record_verdict(folder, "1.2.3", rows[k][1], rows[k][2], status, "carol")
    record_correction(folder, ct.geometry, "1.2.3", rows[2][1], rows[2][2], full, "carol")
    report = agreement(LunaFolder(root))
    # items A aaa, B arr, C ccc, air rrr: P_i 1, 1/3, 1, 1 -> P = 5/6; shares a 4/12,
    # r 5/12, c 3/12 -> Pe = 50/144; kappa = (120/144 - 50/144) / (94/144) = 35/47
    assert report.fleiss == (4, pytest.approx(35 / 47))


def test_old_reviews_without_own_volumes(tmp_path: Path) -> None:
    root, _half, _full = _reviewed_folder(tmp_path)
    shutil.rmtree(reviews_dir(root) / BY_REVIEWER_DIR)  # as written before this change
    report = agreement(LunaFolder(root))
    corrected = next(n for n in report.nodules if set(n.verdicts.values()) == {"corrected"})
    # bob's is the latest correction (the shared volume holds it); alice's was overwritten
    assert math.isnan(corrected.dice[("alice", "bob")])
    assert any("alice's corrected voxels" in note for note in report.notes)


def test_undo_restores_the_reviewers_own_volume(tmp_path: Path) -> None:
    ct = write_folder(tmp_path, IDENTITY)
    _, center, d = scene_rows(ct)[2]
    full = _ball(ct.shape_irc, NODULES["C"], NODULE_D_MM / 2)
    entry, _ = record_correction(reviews_dir(tmp_path), ct.geometry, "1.2.3", center, d, full, "al")
    own = reviewer_labels_path(reviews_dir(tmp_path), "al", "1.2.3")
    from src_train.reviews import load_labels

    assert (load_labels(own, ct.geometry) > 0).sum() == full.sum()
    undo(reviews_dir(tmp_path), entry)
    assert (load_labels(own, ct.geometry) > 0).sum() == 0


def test_cli_review_agreement(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root, _half, _full = _reviewed_folder(tmp_path)
    assert main(["review", str(root), "--agreement"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "Cohen's kappa alice / bob: 0.636 over 4 nodule(s)" in out
    nodule_lines = [line for line in out if line.startswith("  ")]
    assert nodule_lines[0].lstrip().startswith("DISAGREE")
    assert all(line.lstrip().startswith("agree") for line in nodule_lines[1:])

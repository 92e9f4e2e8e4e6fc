"""Label QA's ``bone`` reason: an annotation on a rib is suspicious, a calcified nodule (a
real finding, dense as bone) in lung is not."""

from __future__ import annotations

import pytest
from qa_scene import CALCIFIED, NODULE_D_MM, bony_chest, world

from src_train.qa import QaRule, nodule_signals
from src_train.qa.combine import judge


def test_calcified_nodule_in_lung_is_a_compact_bright_blob_and_not_suspicious() -> None:
    ct = bony_chest()
    signals = nodule_signals(ct.hu, ct.geometry, world(ct, CALCIFIED), NODULE_D_MM)
    assert signals.center_hu > 500  # as bright as bone at its center
    # the bright voxels are the 8 mm ball (1 mm pixels, 2 mm slices), not a long structure
    assert signals.bright_extent_mm == pytest.approx(NODULE_D_MM, abs=2.0)
    assert not signals.bright_capped
    rule = QaRule()
    scores = rule.scores(signals, radius_mm=NODULE_D_MM / 2)
    verdict = judge(scores, rule.named_from)
    assert scores["bone"] == 0.0
    assert verdict.reasons == () and verdict.suspicion < 0.2


@pytest.mark.parametrize("center", [(11, 14, 48), (10, 14, 30)], ids=["marrow", "cortex"])
def test_annotation_on_a_rib_is_suspicious_for_bone(center: tuple[int, int, int]) -> None:
    ct = bony_chest()
    signals = nodule_signals(ct.hu, ct.geometry, world(ct, center), 6.0)
    # the rib runs 57 mm along the columns: out of the 40 mm QA box (on one side or both)
    assert signals.bright_capped and signals.bright_extent_mm > 4 * 6.0
    rule = QaRule()
    verdict = judge(rule.scores(signals, radius_mm=3.0), rule.named_from)
    assert "bone" in verdict.reasons and verdict.suspicion >= 0.9


def test_bone_sized_by_extent_when_the_bright_structure_stays_in_the_box() -> None:
    ct = bony_chest()
    signals = nodule_signals(ct.hu, ct.geometry, world(ct, CALCIFIED), NODULE_D_MM)
    rule = QaRule()
    # an 8 mm bright blob annotated as 2 mm is 4x the annotation: bone-sized
    assert rule.bone_sized(signals, radius_mm=1.0) == 1.0
    assert rule.bone_sized(signals, radius_mm=NODULE_D_MM / 2) == 0.0
    assert rule.bone_sized(signals, radius_mm=float("nan")) == 0.0

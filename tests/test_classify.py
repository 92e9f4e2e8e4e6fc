"""The second stage: features, patches, the classifier and the ranker, on hand-made inputs."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from src_train.classify import (
    FEATURE_NAMES,
    ClassifierConfig,
    Ranker,
    RankerExamples,
    candidate_features,
    extract_patches,
    fit_ranker,
    label_candidates,
)
from src_train.classify.features import fit_logistic
from src_train.classify.patches import PATCH_HU_RANGE
from src_train.ct import CtVolume, Geometry
from src_train.errors import CheckpointError, ConfigError
from src_train.infer import CandidateConfig, group_candidates
from src_train.luna import Nodule
from src_train.records.candidate import CandidateNodule

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _candidate(center: tuple[float, float, float], **fields: object) -> CandidateNodule:
    values: dict[str, object] = {
        "series_uid": "s",
        "center_xyz_mm": center,
        "center_irc": (0.0, 0.0, 0.0),
        "diameter_mm": 6.0,
        "voxel_count": 100,
        "probability": 0.9,
        "mean_probability": 0.8,
        "max_probability": 0.99,
        "axes_mm": (6.0, 6.0, 6.0),
    }
    values.update(fields)
    return CandidateNodule(**values)  # type: ignore[arg-type]


def test_shape_features_tell_a_ball_from_a_tube() -> None:
    """Axes of the equivalent ellipsoid, measured on voxels: a ball of radius 4 mm has three
    axes near 8 mm; a 1-voxel-thin 30 mm line one long axis and an elongation far above 1."""
    geometry = Geometry((40, 40, 40), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    zz, yy, xx = np.indices(geometry.shape_irc)
    mask = (zz - 10) ** 2 + (yy - 10) ** 2 + (xx - 10) ** 2 <= 16
    mask[30, 30, 5:35] = True
    prob = mask.astype(np.float32)
    found = group_candidates(prob, mask, geometry, "s", CandidateConfig(min_diameter_mm=0))
    ball = next(c for c in found if c.center_irc[0] < 20)
    line = next(c for c in found if c.center_irc[0] > 20)
    assert ball.axes_mm == pytest.approx((8.0, 8.0, 8.0), rel=0.08)
    assert ball.elongation == pytest.approx(1.0, abs=0.05)
    assert line.axes_mm[0] == pytest.approx(2 * math.sqrt(5 * (30**2 - 1) / 12), rel=0.01)
    assert line.elongation > 20
    features = candidate_features([ball, line])
    assert features.shape == (2, len(FEATURE_NAMES))
    assert features[1, FEATURE_NAMES.index("log_elongation")] > 3


def test_logistic_model_separates_and_needs_both_classes() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 2))
    y = (x[:, 0] - 0.5 * x[:, 1] > 0.3).astype(int)
    model = fit_logistic(x, y)
    accuracy = ((model.probabilities(x) > 0.5) == y).mean()
    assert accuracy > 0.95
    assert model.weights[0] > 0 > model.weights[1]
    with pytest.raises(ConfigError, match="nodules and non-nodules"):
        fit_logistic(x, np.zeros(200))


def test_labels_follow_the_luna16_hit_rule() -> None:
    nodules = [Nodule("s", (0.0, 0.0, 0.0), 10.0)]
    excluded = [Nodule("s", (50.0, 0.0, 0.0), -1.0)]  # LUNA16's -1: a 10 mm finding
    cands = [_candidate((4.9, 0.0, 0.0)), _candidate((5.0, 0, 0)), _candidate((54.0, 0.0, 0.0))]
    assert label_candidates(cands, nodules, excluded).tolist() == [1, 0, -1]


def _ball_ct(shape=(30, 40, 36)) -> tuple[CtVolume, np.ndarray]:
    geometry = Geometry(shape, (-20.0, 10.0, 30.0), (0.8, 0.7, 1.5))
    center = np.array([3.0, 25.0, 50.0])  # world x, y, z mm
    idx = np.argwhere(np.ones(shape, dtype=bool))
    dist = np.linalg.norm(geometry.irc_to_xyz(idx) - center, axis=1)
    hu = np.where(dist <= 5.0, 40, -850).astype(np.int16).reshape(shape)
    hu[:, :, :3] = 200  # something asymmetric
    return CtVolume(hu, geometry, "s"), center


def test_patches_sit_on_world_axes_whatever_the_file_order() -> None:
    plain, center = _ball_ct()
    # the same voxels stored with x and z reversed (each at the same world position)
    g = plain.geometry
    far_corner = g.irc_to_xyz(np.array(g.shape_irc) - 1)
    origin = (far_corner[0], g.origin_xyz_mm[1], far_corner[2])
    flipped_geometry = Geometry(
        g.shape_irc, origin, g.spacing_xyz_mm, (-1.0, 0, 0, 0, 1.0, 0, 0, 0, -1.0)
    )
    flipped = CtVolume(np.ascontiguousarray(plain.hu[::-1, :, ::-1]), flipped_geometry, "s")
    a, b = extract_patches(plain, [center])[0], extract_patches(flipped, [center])[0]
    np.testing.assert_allclose(a, b, atol=1e-3)
    mid = a.shape[0] // 2
    assert a[mid, mid, mid] == pytest.approx(40, abs=1) and a[0, 0, 0] == -850
    assert a[0, 0, -1] == PATCH_HU_RANGE[0], "past the volume's last column"
    assert a.min() >= PATCH_HU_RANGE[0] and a.max() <= PATCH_HU_RANGE[1]
    assert (a > -400).sum() == pytest.approx(4 / 3 * math.pi * 5**3, rel=0.15)
    outside = extract_patches(plain, [(1e4, 0.0, 0.0)])[0]
    assert (outside == PATCH_HU_RANGE[0]).all()


def _toy_examples(rng: np.random.Generator) -> RankerExamples:
    """Bright balls (nodules) and bright rods (vessels) in dark patches, with features."""
    size = ClassifierConfig().patch_voxels
    zz, yy, xx = np.indices((size, size, size)) - (size - 1) / 2
    ball = np.where(zz**2 + yy**2 + xx**2 <= 16, 40.0, -850.0)
    rod = np.where(yy**2 + xx**2 <= 4, 40.0, -850.0)
    patches, cands, labels = [], [], []
    for k in range(40):
        nodule = k % 4 == 0
        noise = rng.normal(0, 20, size=ball.shape)
        patches.append((ball if nodule else rod) + noise)
        axes = (8.0, 8.0, 7.5) if nodule else (24.0, 4.0, 4.0)
        cands.append(_candidate((0.0, 0.0, float(k)), axes_mm=axes))
        labels.append(int(nodule))
    return RankerExamples(cands, np.asarray(labels), patches=np.asarray(patches, dtype=np.float32))


@pytest.mark.parametrize("kind", ["features", "classifier", "combined"])
def test_every_ranker_puts_nodules_first_and_survives_a_checkpoint(kind: str) -> None:
    rng = np.random.default_rng(1)
    examples = _toy_examples(rng)
    config = dataclasses.replace(ClassifierConfig(), epochs=3, seed=2)
    ranker = fit_ranker(kind, examples, config)
    scores = ranker.scores(examples.candidates, patches=examples.patches)
    nodule = examples.labels.astype(bool)
    assert scores[nodule].min() > scores[~nodule].max(), "a perfect ranking of the toy set"
    ranked = ranker.rank(examples.candidates, patches=examples.patches)
    assert all(r.segmenter_probability == 0.9 for r in ranked)
    assert [r.probability for r in ranked] == sorted(scores.tolist(), reverse=True)

    state = ranker.state()
    buffer = __import__("io").BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    back = Ranker.from_state(torch.load(buffer, weights_only=True))
    np.testing.assert_allclose(
        back.scores(examples.candidates, patches=examples.patches), scores, rtol=1e-6
    )
    with pytest.raises(CheckpointError, match="ranker cannot be read"):
        Ranker.from_state({**state, "kind": "oracle"}, "x.pt")


def test_the_stacked_layer_sees_out_of_fold_classifier_logits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A candidate's logit for the combined ranker's logistic layer comes from a classifier
    that never saw its series: changing the labels of one series' candidates leaves their
    logits as they were, and ``fit_ranker("combined")`` fits on those logits."""
    from src_train.classify import training

    rng = np.random.default_rng(3)
    examples = _toy_examples(rng)
    examples.candidates = [
        dataclasses.replace(c, series_uid=f"s{k % 3}") for k, c in enumerate(examples.candidates)
    ]
    config = dataclasses.replace(ClassifierConfig(), epochs=1, seed=2)
    folds = training.stacking_folds([c.series_uid for c in examples.candidates])
    assert sorted(set(folds.tolist())) == [0, 1, 2]
    assert all(  # whole series per fold
        len({f for c, f in zip(examples.candidates, folds, strict=True) if c.series_uid == uid})
        == 1
        for uid in ("s0", "s1", "s2")
    )
    logits = training.out_of_fold_logits(examples, config)
    held = folds == 0
    labels = np.where(held, 1 - examples.labels, examples.labels)
    flipped = dataclasses.replace(examples, labels=labels)
    again = training.out_of_fold_logits(flipped, config)
    assert np.array_equal(logits[held], again[held]), "fold 0's logits ignore fold 0's labels"
    assert not np.array_equal(logits[~held], again[~held]), "other folds trained on them"

    seen: list[np.ndarray] = []
    original = training.out_of_fold_logits

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(original(*args, **kwargs))
        return seen[-1]

    monkeypatch.setattr(training, "out_of_fold_logits", spy)
    ranker = fit_ranker("combined", examples, config)
    assert len(seen) == 1 and ranker.logistic is not None and ranker.classifier is not None

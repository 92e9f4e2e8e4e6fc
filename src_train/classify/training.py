"""Examples a ranker learns from, and fitting each kind of :class:`~.ranker.Ranker`.

Examples come from training series only (never validation ones):

* the segmenter's own candidates on those series, labelled by LUNA16's hit rule (a candidate
  hitting an annotated nodule is a nodule; one hitting only an excluded finding is left out;
  the rest are the segmenter's false positives) -- every kind of ranker learns from these;
* for the patch classifier also the annotated nodule centers (more nodules, at the places a
  radiologist marked) and the data set's candidate points (``candidates.csv``: class 1 near
  nodules, class 0 look-alikes such as vessel branches), as the reference chapter's classifier
  was trained.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from src_train.classify.features import candidate_features, fit_logistic
from src_train.classify.network import ClassifierConfig, classifier_logits, train_classifier
from src_train.classify.patches import extract_patches
from src_train.classify.ranker import RANKERS, Ranker
from src_train.ct import CtVolume
from src_train.errors import ConfigError
from src_train.evaluate import nodule_hits
from src_train.luna import Nodule
from src_train.records.candidate import CandidateNodule

log = logging.getLogger(__name__)

#: Folds of the cross-fitting that feeds the combined ranker's logistic layer.
STACK_FOLDS = 3


@dataclass
class RankerExamples:
    """What rankers are fitted on (see the module docstring).

    Attributes:
        candidates: the segmenter's candidates (excluded-finding hits left out).
        labels: 1 where a candidate hits a nodule, else 0, aligned with ``candidates``.
        patches: CT patches of ``candidates`` (None when not read).
        extra_patches, extra_labels: patches of annotated centers and candidate points, for
            the classifier only.
        extra_series: the series of each extra patch (aligned with ``extra_labels``).
    """

    candidates: list[CandidateNodule] = field(default_factory=list)
    labels: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    patches: np.ndarray | None = None
    extra_patches: np.ndarray | None = None
    extra_labels: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    extra_series: list[str] = field(default_factory=list)

    def extend(self, other: RankerExamples) -> None:
        """Append another series' examples."""
        self.candidates += other.candidates
        self.labels = np.concatenate([self.labels, other.labels])
        self.patches = _cat(self.patches, other.patches)
        self.extra_patches = _cat(self.extra_patches, other.extra_patches)
        self.extra_labels = np.concatenate([self.extra_labels, other.extra_labels])
        self.extra_series += other.extra_series

    def summary(self) -> str:
        """One line: how many examples of each kind."""
        extra = len(self.extra_labels)
        return (
            f"{len(self.candidates)} candidates ({int(self.labels.sum())} on nodules) and "
            f"{extra} extra points ({int(self.extra_labels.sum())} nodules)"
        )


def _cat(a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray | None:
    if a is None:
        return b
    if b is None:
        return a
    return np.concatenate([a, b])


def label_candidates(
    candidates: Sequence[CandidateNodule],
    nodules: Sequence[Nodule],
    excluded: Sequence[Nodule] = (),
) -> np.ndarray:
    """Per candidate of one series: 1 hits a nodule, 0 hits nothing, -1 hits only an excluded
    finding (LUNA16's hit rule, :func:`src_train.evaluate.nodule_hits`)."""
    centers = np.asarray([c.center_xyz_mm for c in candidates], dtype=np.float64).reshape(-1, 3)
    on_nodule = nodule_hits(centers, nodules).any(axis=1)
    on_excluded = nodule_hits(centers, excluded).any(axis=1)
    return np.where(on_nodule, 1, np.where(on_excluded, -1, 0)).astype(np.int64)


def candidate_examples(
    ct: CtVolume,
    candidates: Sequence[CandidateNodule],
    nodules: Sequence[Nodule],
    excluded: Sequence[Nodule] = (),
    with_patches: bool = True,
) -> RankerExamples:
    """A training series' segmenter candidates, labelled (excluded-finding hits left out),
    with their patches when ``with_patches`` (the classifier needs them)."""
    labels = label_candidates(candidates, nodules, excluded)
    keep = labels >= 0
    kept = [c for c, k in zip(candidates, keep, strict=True) if k]
    out = RankerExamples(kept, labels[keep])
    if with_patches:
        out.patches = extract_patches(ct, [c.center_xyz_mm for c in kept])
    return out


def point_examples(
    ct: CtVolume, nodules: Sequence[Nodule], points: Sequence[Nodule] = ()
) -> RankerExamples:
    """Patches of a training series' annotated nodule centers (nodules) and of its candidate
    ``points`` (``candidates.csv``: class 1 nodules, class 0 look-alikes), for the classifier.
    Cheap: no model runs, so every training series can contribute."""
    centers = [*(n.center_xyz_mm for n in nodules), *(p.center_xyz_mm for p in points)]
    return RankerExamples(
        extra_patches=extract_patches(ct, centers),
        extra_labels=np.asarray(
            [1] * len(nodules) + [int(p.is_nodule) for p in points], dtype=np.int64
        ),
        extra_series=[ct.series_uid] * len(centers),
    )


def fit_ranker(
    kind: str,
    examples: RankerExamples,
    classifier: ClassifierConfig | None = None,
    *,
    progress: Callable[[int, int, str], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Ranker:
    """Fit a ranker of ``kind`` (:data:`RANKERS`, not ``segmenter``) on ``examples``.

    ``combined`` fits the classifier on every example, and a logistic model over the features
    and the classifier's logit on the candidates, where each candidate's logit comes from a
    classifier fitted without its series (:func:`out_of_fold_logits`): the logistic layer
    learns how far to trust the classifier on candidates it has not seen, as at inference.
    """
    if kind not in RANKERS[1:]:
        raise ConfigError(f"Unknown ranker {kind!r}; choose one of {', '.join(RANKERS[1:])}.")
    log.info("fitting a %s ranker on %s", kind, examples.summary())
    features = candidate_features(examples.candidates)
    if kind == "features":
        return Ranker(kind, logistic=fit_logistic(features, examples.labels))
    if examples.patches is None:
        raise ConfigError("The classifier needs patches; collect the examples with patches.")
    patches = examples.patches
    labels = examples.labels
    if examples.extra_patches is not None and len(examples.extra_patches):
        patches = np.concatenate([patches, examples.extra_patches])
        labels = np.concatenate([labels, examples.extra_labels])
    network = train_classifier(
        patches, labels, classifier, progress=progress, should_stop=should_stop
    )
    if kind == "classifier":
        return Ranker(kind, classifier=network)
    logit = out_of_fold_logits(examples, classifier, progress=progress, should_stop=should_stop)
    logistic = fit_logistic(np.column_stack([features, logit]), examples.labels)
    return Ranker(kind, logistic=logistic, classifier=network)


def stacking_folds(series: Sequence[str], folds: int = STACK_FOLDS) -> np.ndarray:
    """Fold number per candidate: whole series per fold (series sorted, dealt round-robin into
    ``min(folds, series count)`` folds); by position when all come from one series."""
    groups = sorted(set(series))
    if len(groups) < 2:
        return np.arange(len(series)) % folds
    fold_of = {uid: i % min(folds, len(groups)) for i, uid in enumerate(groups)}
    return np.asarray([fold_of[uid] for uid in series], dtype=np.int64)


def out_of_fold_logits(
    examples: RankerExamples,
    classifier: ClassifierConfig | None = None,
    folds: int = STACK_FOLDS,
    *,
    progress: Callable[[int, int, str], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> np.ndarray:
    """The classifier's logit ``(N,)`` for each candidate of ``examples``, from a classifier
    trained on the other folds only (:func:`stacking_folds`; the extra patches of a held-out
    fold's series are left out too): cross-fitted inputs for a stacked layer."""
    assert examples.patches is not None
    series = [c.series_uid for c in examples.candidates]
    extra = examples.extra_patches
    if len(set(series)) >= 2:  # one deal of series into folds, for candidates and extras
        dealt = stacking_folds(series + examples.extra_series, folds)
        fold, extra_fold = dealt[: len(series)], dealt[len(series) :]
    else:
        fold = stacking_folds(series, folds)
        extra_fold = np.full(len(examples.extra_labels), -1)
    logits = np.zeros(len(series), dtype=np.float64)
    for k in np.unique(fold):
        held = fold == k
        patches, labels = examples.patches[~held], examples.labels[~held]
        if extra is not None and len(extra):
            keep = extra_fold != k
            patches = np.concatenate([patches, extra[keep]])
            labels = np.concatenate([labels, examples.extra_labels[keep]])
        log.info("stacking fold %d: classifier without %d candidates", int(k) + 1, int(held.sum()))
        network = train_classifier(
            patches, labels, classifier, progress=progress, should_stop=should_stop
        )
        logits[held] = classifier_logits(network, examples.patches[held])
    return logits

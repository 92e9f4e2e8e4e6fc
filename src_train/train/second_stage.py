"""The detector's second stage, fitted at the end of a run (``lunaseg train --ranker KIND``).

The best checkpoint's segmenter runs over some training series (never validation ones) from the
cache; its candidates, labelled by LUNA16's hit rule, and for the patch classifier also the
annotated nodules and the data set's candidate points of every training series (cheap: no
model runs for those), are the examples a
:class:`~src_train.classify.Ranker` is fitted on (:mod:`src_train.classify.training`). The
validation candidates of the best epoch are then re-ranked, so the run reports what the whole
detector does on held-out series.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Generator, Sequence
from dataclasses import dataclass

import numpy as np
from torch import nn

from src_train.cache import SeriesCache
from src_train.classify import ClassifierConfig, Ranker, fit_ranker
from src_train.classify.training import RankerExamples, candidate_examples, point_examples
from src_train.errors import ConfigError
from src_train.infer.runner import InferenceOptions, InferenceProgress, iter_inference
from src_train.infer.tuner import TunerCache
from src_train.luna import LunaFolder
from src_train.records.truth import ScoringTruth
from src_train.train.passes import SeriesPasses
from src_train.train.validation import SeriesValidation, cached_volume, score_validation

log = logging.getLogger(__name__)

#: Rankers ``lunaseg train --ranker`` fits (``none``: rank by the segmenter's score).
RANKER_CHOICES = ("none", "features", "classifier", "combined")


def mining_series(train_series: Sequence[str], count: int) -> list[str]:
    """``count`` training series spread evenly over the sorted list (all when ``count`` is 0
    or larger than the list)."""
    uids = sorted(train_series)
    if count <= 0 or count >= len(uids):
        return uids
    picks = np.linspace(0, len(uids) - 1, count).round().astype(int)
    return [uids[i] for i in sorted(set(picks.tolist()))]


def iter_mine(
    cache: SeriesCache,
    folder: LunaFolder,
    truth: ScoringTruth,
    mined: Sequence[str],
    model: nn.Module,
    options: InferenceOptions,
    tuners: TunerCache,
    with_patches: bool,
    pointed: Sequence[str] = (),
) -> Generator[InferenceProgress, None, RankerExamples]:
    """Run ``model`` over the cached training series ``mined`` and collect their candidates;
    with ``with_patches`` also the annotated centers and candidate points of the ``pointed``
    series (no model runs there). Yields inference progress (slices over ``mined``)."""
    examples = RankerExamples()
    total = sum(cache.meta(uid).shape_irc[0] for uid in mined)
    done = 0
    for uid in mined:
        ct = cached_volume(cache, uid)
        steps = iter_inference(ct, model, options, tuners=tuners)
        try:
            while True:
                step = next(steps)
                yield InferenceProgress(done + step.done, total, f"ranker examples: {uid}")
        except StopIteration as finished:
            result = finished.value
        done += ct.shape_irc[0]
        excluded = [f for f in truth.excluded if f.series_uid == uid]
        nodules = truth.nodules.get(uid, [])
        examples.extend(candidate_examples(ct, result.candidates, nodules, excluded, with_patches))
    if with_patches:
        for uid in pointed:
            points = folder.candidates(uid) if folder.candidates_path is not None else []
            ct = cached_volume(cache, uid)
            examples.extend(point_examples(ct, truth.nodules.get(uid, []), points))
    return examples


@dataclass
class SecondStage:
    """A ranker fitted after training, and how it did.

    Attributes:
        ranker: the fitted ranker.
        metrics: validation metrics of the segmenter's validation candidates re-ranked by it.
        examples: what it was fitted on (for the log line).
    """

    ranker: Ranker
    metrics: dict[str, float]
    examples: RankerExamples


def fit_second_stage(
    passes: SeriesPasses,
    folder: LunaFolder,
    truth: ScoringTruth,
    kind: str,
    model: nn.Module,
    train_uids: Sequence[str],
    val_uids: Sequence[str],
    *,
    ranker_series: int,
    seed: int,
    outcomes: Sequence[SeriesValidation] | None = None,
) -> SecondStage | None:
    """Fit a ``kind`` ranker on the candidates ``model`` finds on training series (see the
    module docstring) and score ``model``'s validation candidates re-ranked by it.

    ``outcomes``: ``model``'s validation outcomes when known (else validated here). Returns
    None when no ranker can be fitted (logged: candidates keep the segmenter's order); raises
    :class:`CancelledError` on a stop request.
    """
    dist = passes.dist
    mined = passes.drive(
        iter_mine(
            passes.cache,
            folder,
            truth,
            dist.share(mining_series(train_uids, ranker_series)),
            model,
            passes.options,
            passes.tuners,
            with_patches=kind != "features",
            pointed=dist.share(train_uids),
        ),
        "ranker",
    )
    examples = RankerExamples()
    for part in dist.gather(mined):
        examples.extend(part)
    try:
        ranker = fit_ranker(
            kind,
            examples,
            ClassifierConfig(seed=seed),
            progress=lambda done, total, message: passes.emit(
                "ranker", batch=done, batches=total, message=message
            ),
            should_stop=passes.stop_requested,
        )
    except ConfigError as exc:  # e.g. no candidate on a nodule: keep the segmenter's order
        log.warning("second stage not fitted (candidates keep the segmenter's order): %s", exc)
        return None
    if outcomes is None:  # e.g. resumed after the last validation: validate again
        outcomes = passes.validate_all(val_uids, model)
    ranked = [
        dataclasses.replace(
            o, candidates=ranker.rank(o.candidates, cached_volume(passes.cache, o.uid))
        )
        for o in outcomes
    ]
    return SecondStage(ranker, score_validation(ranked, truth, val_uids), examples)


def second_stage_line(kind: str, fitted: SecondStage, segmenter_cpm: float) -> str:
    """The log line of a fitted second stage: its examples and validation metrics beside the
    segmenter's CPM."""
    m = fitted.metrics
    return (
        f"second stage ({kind}, {fitted.examples.summary()}): validation nodule recall "
        f"{m['nodule_recall']:.3f}, {m['fp_per_scan']:.1f} FP/scan, CPM {m['cpm']:.3f} "
        f"(segmenter alone: CPM {segmenter_cpm:.3f})"
    )

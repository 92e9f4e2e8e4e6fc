"""The detector's second stage, fitted at the end of a run (``lunaseg train --ranker KIND``).

The segmenter of ``checkpoint_best.pt`` runs over some training series from the cache; its
candidates, labelled by LUNA16's hit rule against the run's reviewed truth, and for the patch
classifier also the annotated nodules and the data set's candidate points of every training
series (cheap: no model runs for those), are the examples a :class:`~src_train.classify.Ranker`
is fitted on (:mod:`src_train.classify.training`; the combined ranker's stacked layer on
cross-fitted logits). That segmenter's validation candidates are then re-ranked, so the run
reports what the whole detector does on the selection set.

Where the examples come from, and why: the only series the segmenter did not train on are the
validation series (the selection set) and the test series (never looked at). Mining the
validation series would make the re-ranked validation figures in-sample for the ranker, and
mining the test series would break the test split, so the examples come from training series,
whose candidates are fewer and more confident than on unseen series; the stacked layer's
cross-fitting is where out-of-sample inputs matter most (it learns how far to trust the CNN).

Each checkpoint file carries the ranker only when it holds the segmenter the ranker was fitted
for; the others carry a note saying why they have none (:class:`SecondStageRecord`).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import nn

from src_train.cache import SeriesCache
from src_train.classify import ClassifierConfig, Ranker, fit_ranker
from src_train.classify.ranker import RANKER_KEY
from src_train.classify.training import RankerExamples, candidate_examples, point_examples
from src_train.errors import ConfigError
from src_train.infer.runner import InferenceOptions, InferenceProgress, iter_inference
from src_train.infer.tuner import TunerCache
from src_train.luna import LunaFolder
from src_train.model import load_checkpoint
from src_train.records.truth import ScoringTruth, scoring_truth
from src_train.reviews import ReviewedFolder
from src_train.train.passes import SeriesPasses
from src_train.train.run_folder import BEST, LATEST, RunFolder
from src_train.train.validation import SeriesValidation, cached_volume, score_validation

log = logging.getLogger(__name__)

#: Key of a checkpoint's ``extra`` recording the run's second stage (:class:`SecondStageRecord`).
SECOND_STAGE_KEY = "second_stage"

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
    points_folder: LunaFolder | None = None,
    point_uids: Sequence[str] = (),
) -> Generator[InferenceProgress, None, RankerExamples]:
    """Run ``model`` over the cached training series ``mined`` and collect their candidates;
    with ``with_patches`` also the annotated centers and candidate points of the ``pointed``
    series and of the ``point_uids`` series of ``points_folder`` (``--ranker-points``,
    read from disk, reviewed nodules; no model runs on either). Yields progress: slices over
    ``mined``, then series of ``points_folder``."""
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
        if points_folder is not None and point_uids:
            examples.extend((yield from iter_folder_points(points_folder, point_uids)))
    return examples


def iter_folder_points(
    folder: LunaFolder, uids: Sequence[str]
) -> Generator[InferenceProgress, None, RankerExamples]:
    """The classifier's point examples (reviewed nodule centres, ``candidates.csv`` points) of
    the series ``uids`` of a folder outside the run (``--ranker-points``); yields one step
    per series read."""
    reviewed = ReviewedFolder(folder.root)
    truth = scoring_truth(reviewed)
    examples = RankerExamples()
    for k, uid in enumerate(uids):
        yield InferenceProgress(k, len(uids), f"ranker points: {uid}")
        points = reviewed.candidates(uid) if reviewed.candidates_path is not None else []
        examples.extend(point_examples(reviewed.load(uid), truth.nodules.get(uid, []), points))
    yield InferenceProgress(len(uids), len(uids), f"ranker points: {len(uids)} series read")
    return examples


@dataclass
class SecondStage:
    """A ranker fitted after training, and how it did.

    Attributes:
        ranker: the fitted ranker.
        metrics: validation metrics of the segmenter's validation candidates re-ranked by it.
        examples: what it was fitted on (for the log line).
        segmenter_metrics: the same validation candidates in the segmenter's own order (empty:
            not scored).
    """

    ranker: Ranker
    metrics: dict[str, float]
    examples: RankerExamples
    segmenter_metrics: dict[str, float] = field(default_factory=dict)


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
    points_folder: LunaFolder | None = None,
    point_uids: Sequence[str] = (),
) -> SecondStage | None:
    """Fit a ``kind`` ranker on the candidates ``model`` finds on training series (see the
    module docstring) and score ``model``'s validation candidates re-ranked by it.

    ``points_folder``, ``point_uids``: a folder outside the run and its series whose points join the
    classifier's examples (``--ranker-points``, :func:`iter_folder_points`).

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
            points_folder=points_folder,
            point_uids=dist.share(point_uids),
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
    return SecondStage(
        ranker,
        score_validation(ranked, truth, val_uids),
        examples,
        segmenter_metrics=score_validation(outcomes, truth, val_uids),
    )


def second_stage_line(kind: str, fitted: SecondStage) -> str:
    """The log line of a fitted second stage: its examples and validation metrics beside the
    CPM of the same validation candidates in the segmenter's order."""
    m = fitted.metrics
    alone = fitted.segmenter_metrics.get("cpm")
    return (
        f"second stage ({kind}, {fitted.examples.summary()}): validation nodule recall "
        f"{m['nodule_recall']:.3f}, {m['fp_per_scan']:.1f} FP/scan, CPM {m['cpm']:.3f} "
        + (
            "(segmenter alone: not scored)"
            if alone is None
            else f"(segmenter alone: CPM {alone:.3f})"
        )
    )


@dataclass
class SecondStageRecord:
    """What a run's second stage became, and which checkpoint it belongs to.

    Attributes:
        kind: the ``--ranker`` asked for.
        fitted_for_epoch: the epoch of the segmenter it was fitted for (``checkpoint_best.pt``'s);
            None when none could be fitted.
        ranker: the ranker (None: none could be fitted, :attr:`reason` says why).
        metrics: validation metrics of that segmenter's candidates re-ranked by it.
        reason: why there is no ranker (empty when there is one).
    """

    kind: str
    fitted_for_epoch: int | None
    ranker: Ranker | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    reason: str = ""

    def checkpoint_fields(self, name: str, epoch: int) -> tuple[dict[str, Any], str | None]:
        """The ``extra`` fields of checkpoint ``name`` of ``epoch``: the ranker only when it
        was fitted for this checkpoint's segmenter, else a note saying why there is none (also
        returned, for the log)."""
        record: dict[str, Any] = {"kind": self.kind, "fitted_for_epoch": self.fitted_for_epoch}
        if self.ranker is not None and epoch == self.fitted_for_epoch:
            record["ranker"] = "fitted for this checkpoint's segmenter"
            fields = {RANKER_KEY: self.ranker.state(), "ranked_metrics": self.metrics}
            return {SECOND_STAGE_KEY: record, **fields}, None
        why = self.reason or (
            f"the {self.kind} ranker was fitted for the segmenter of epoch "
            f"{self.fitted_for_epoch} (checkpoint_best.pt), not for this one (epoch {epoch}); "
            "candidates keep the segmenter's order, use checkpoint_best.pt for both stages"
        )
        note = f"{name} carries no ranker: {why}"
        record.update(ranker=None, note=note)
        return {SECOND_STAGE_KEY: record}, note

    @classmethod
    def from_extra(cls, extra: dict[str, Any], epoch: int, source: str) -> SecondStageRecord | None:
        """The record a checkpoint of ``epoch`` carries (None: the second stage has not run).
        A checkpoint of an older LunaSeg with a ranker but no record counts it as fitted for
        its own segmenter."""
        record = extra.get(SECOND_STAGE_KEY)
        ranker_state = extra.get(RANKER_KEY)
        ranker = Ranker.from_state(ranker_state, source) if isinstance(ranker_state, dict) else None
        metrics = dict(extra.get("ranked_metrics") or {})
        if isinstance(record, dict):
            fitted = record.get("fitted_for_epoch")
            return cls(
                str(record.get("kind", "")),
                None if fitted is None else int(fitted),
                ranker,
                metrics,
                "" if ranker is not None or fitted is not None else str(record.get("note", "")),
            )
        if ranker is None:
            return None
        return cls(ranker.kind, epoch, ranker, metrics)


def store_second_stage(run: RunFolder, record: SecondStageRecord) -> None:
    """Add ``record``'s fields to the run's best and latest checkpoints (each gets the ranker
    only when it holds the segmenter it was fitted for, else the note, also logged)."""
    for name in (BEST, LATEST):
        path = run / name
        if not path.is_file():
            continue
        fields, note = record.checkpoint_fields(name, load_checkpoint(path).epoch)
        if note:
            log.info("%s", note)
        for key, value in fields.items():
            run.add_to_checkpoint(name, key, value)

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

from collections.abc import Generator, Sequence

import numpy as np
from torch import nn

from src_train.cache import SeriesCache
from src_train.classify.training import RankerExamples, candidate_examples, point_examples
from src_train.infer.runner import InferenceOptions, InferenceProgress, iter_inference
from src_train.infer.tuner import TunerCache
from src_train.luna import LunaFolder
from src_train.records.truth import ScoringTruth
from src_train.train.validation import cached_volume

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

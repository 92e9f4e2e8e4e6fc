"""The detector's second stage: rank candidate nodules so that nodules come first.

* :mod:`.features` -- size, shape and segmenter confidence of a candidate; a logistic model;
* :mod:`.patches` -- CT cubes around candidates on a fixed millimetre grid;
* :mod:`.network` -- a small 3-D nodule / non-nodule CNN on those cubes and its training;
* :mod:`.ranker` -- :class:`Ranker`, which scores candidates and travels in the checkpoint;
* :mod:`.training` -- examples from training series and fitting each kind of ranker.
"""

from src_train.classify.features import FEATURE_NAMES, LogisticModel, candidate_features
from src_train.classify.network import ClassifierConfig, NoduleClassifier
from src_train.classify.patches import extract_patches
from src_train.classify.ranker import RANKER_KEY, RANKERS, Ranker
from src_train.classify.training import (
    RankerExamples,
    candidate_examples,
    fit_ranker,
    label_candidates,
    point_examples,
)

__all__ = [
    "FEATURE_NAMES",
    "RANKERS",
    "RANKER_KEY",
    "ClassifierConfig",
    "LogisticModel",
    "NoduleClassifier",
    "Ranker",
    "RankerExamples",
    "candidate_examples",
    "candidate_features",
    "extract_patches",
    "fit_ranker",
    "label_candidates",
    "point_examples",
]

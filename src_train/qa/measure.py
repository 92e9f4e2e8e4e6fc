"""How well a suspicion ranking finds known bad rows: ROC AUC, precision among the top k, and
which kinds of error it misses. Used by ``benchmarks/bench_qa.py`` and the tests."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata


def roc_auc(scores: Sequence[float] | np.ndarray, bad: Sequence[bool] | np.ndarray) -> float:
    """Probability that a random bad row scores above a random good one (ties count half):
    the Mann-Whitney form of the ROC AUC. NaN when one class is empty."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(bad, dtype=bool)
    n_bad, n_good = int(y.sum()), int((~y).sum())
    if n_bad == 0 or n_good == 0:
        return float("nan")
    ranks = rankdata(s)
    return float((ranks[y].sum() - n_bad * (n_bad + 1) / 2) / (n_bad * n_good))


@dataclass(frozen=True)
class RankingScore:
    """A ranking measured against known labels.

    Attributes:
        auc: ROC AUC of bad vs good rows.
        k: the number of bad rows.
        precision_at_k: fraction of bad rows among the ``k`` most suspicious.
        missed: per kind, the bad rows of that kind outside the top ``k``.
        total: per kind, the bad rows of that kind.
    """

    auc: float
    k: int
    precision_at_k: float
    missed: Counter[str]
    total: Counter[str]


def score_ranking(scores: Sequence[float] | np.ndarray, kinds: Sequence[str]) -> RankingScore:
    """Measure ``scores`` (higher = more suspicious) against ``kinds`` (``""`` = a good row,
    else the kind of error). Ties at the k-th place are broken by row order."""
    s = np.asarray(scores, dtype=np.float64)
    bad = np.array([bool(k) for k in kinds])
    k = int(bad.sum())
    order = np.argsort(-s, kind="stable")
    top = set(order[:k].tolist())
    total = Counter(kind for kind in kinds if kind)
    missed = Counter(kind for i, kind in enumerate(kinds) if kind and i not in top)
    precision = float(bad[order[:k]].mean()) if k else float("nan")
    return RankingScore(roc_auc(s, bad), k, precision, missed, total)

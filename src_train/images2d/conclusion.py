"""The conclusion of a model x loss comparison, generated from its numbers.

:func:`conclude` ranks the rows by one test metric and says, each point from the numbers:
which combination won and by how much; whether that gap exceeds the seed-to-seed noise (when
two or more seeds ran) and how the two best compare image by image on the same test images;
which loss was best for each model and which model for each loss; how each loss trades
precision against recall (the "why": under- or over-segmentation); what the models cost; and
whether the winner was still improving at its last epoch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from src_train.errors import ConfigError
from src_train.images2d.results import ResultRow

#: Metrics a comparison can be ranked by, and how the text names them.
RANK_METRICS = {
    "test_iou": "test IoU",
    "test_iou_score": "test IoU score",
    "test_dice": "test Dice",
}

#: A gap is beyond seed noise when larger than this many standard deviations of a difference.
NOISE_SIGMAS = 2.0

#: Precision and recall further apart than this make a loss under- or over-segment.
BALANCE_MARGIN = 0.05

#: Best epoch in the last this fraction of training: "still improving".
LATE_FRACTION = 0.9

#: Best epoch before this fraction of training: "peaked early".
EARLY_FRACTION = 0.5

#: A combination must beat the best trivial mask by this much to count as having learned.
TRIVIAL_MARGIN = 0.05

#: Per-image differences smaller than this count as ties.
TIE_TOLERANCE = 1e-9


@dataclass
class Conclusion:
    """The ranking and the sentences that explain it.

    Attributes:
        metric: the ranking metric (a key of :data:`RANK_METRICS`).
        ranking: rows, best first.
        gap: winner minus runner-up (NaN with one row).
        noise_sd: standard deviation of the difference of two rows' seed means due to seeds
            alone (NaN when one seed ran).
        beyond_noise: whether ``gap`` exceeds :data:`NOISE_SIGMAS` x ``noise_sd`` (None when
            not measured).
        lines: the conclusion, one markdown sentence or two per item.
    """

    metric: str
    ranking: list[ResultRow]
    gap: float = math.nan
    noise_sd: float = math.nan
    beyond_noise: bool | None = None
    lines: list[str] = field(default_factory=list)

    @property
    def winner(self) -> ResultRow:
        """The best row."""
        return self.ranking[0]


def _f(value: float) -> str:
    return f"{value:.3f}"


def _pooled_seed_sd(rows: list[ResultRow], metric: str) -> tuple[float, int]:
    """Pooled seed-to-seed SD of ``metric`` over rows with >= 2 seeds, and the fewest seeds."""
    variances = [row.seed_sd(metric) ** 2 for row in rows if len(row.seeds) > 1]
    if not variances:
        return math.nan, 1
    return float(math.sqrt(np.mean(variances))), min(len(row.seeds) for row in rows)


def _noise_line(result: Conclusion, rows: list[ResultRow]) -> str:
    name = RANK_METRICS[result.metric]
    sd, seeds = _pooled_seed_sd(rows, result.metric)
    if math.isnan(sd):
        return (
            "Seed-to-seed noise was not measured (one seed per combination); run with "
            "`--seeds 2` to learn whether this gap is larger than it."
        )
    result.noise_sd = sd * math.sqrt(2 / seeds)
    result.beyond_noise = bool(result.gap > NOISE_SIGMAS * result.noise_sd)
    ratio = result.gap / result.noise_sd if result.noise_sd > 0 else math.inf
    verdict = (
        "beyond seed noise"
        if result.beyond_noise
        else "within seed noise, so these runs do not settle which of the two is better"
    )
    return (
        f"Seed-to-seed noise: the {name} of one combination varies by SD {_f(sd)} between "
        f"seeds (pooled over {len(rows)} combinations), so a difference of two {seeds}-seed "
        f"means varies by SD {_f(result.noise_sd)}. The gap is {ratio:.1f} times that "
        f"(threshold {NOISE_SIGMAS:g}): {verdict}."
    )


def _paired_line(best: ResultRow, second: ResultRow) -> str | None:
    """Image-by-image comparison of the two best rows on the same test images (IoU)."""
    if best.runs[0].test_keys != second.runs[0].test_keys:
        return None
    diff = best.per_image("iou") - second.per_image("iou")
    n = len(diff)
    if n == 0:
        return None
    wins = int((diff > TIE_TOLERANCE).sum())
    losses = int((diff < -TIE_TOLERANCE).sum())
    se = float(np.std(diff, ddof=1) / math.sqrt(n)) if n > 1 else math.nan
    return (
        f"On the same {n} test images, {best.label} has the higher IoU on {wins} and the lower "
        f"on {losses} (mean per-image difference {_f(float(diff.mean()))} ± {_f(se)} standard "
        "error, which measures how much the test images alone could move the gap)."
    )


def _best_of(rows: list[ResultRow], metric: str) -> ResultRow:
    return max(rows, key=lambda row: row.metrics[metric])


def _loss_lines(rows: list[ResultRow], metric: str) -> list[str]:
    """Best loss per model, and best model per loss."""
    lines = []
    models = list(dict.fromkeys(row.model for row in rows))
    losses = list(dict.fromkeys(row.loss for row in rows))
    if len(losses) > 1:
        best_loss = {m: _best_of([r for r in rows if r.model == m], metric).loss for m in models}
        detail = "; ".join(
            f"{m}: "
            + ", ".join(
                f"{r.loss} {_f(r.metrics[metric])}"
                for r in sorted((r for r in rows if r.model == m), key=lambda r: -r.metrics[metric])
            )
            for m in models
        )
        winners = set(best_loss.values())
        if len(winners) == 1 and len(models) > 1:
            lines.append(f"**{winners.pop()}** is the best loss for every model ({detail}).")
        elif len(models) == 1:
            lines.append(f"Best loss: **{best_loss[models[0]]}** ({detail}).")
        else:
            lines.append(f"The best loss depends on the model ({detail}).")
    if len(models) > 1:
        gaps: dict[str, list[float]] = {}
        winners_by_loss: dict[str, list[str]] = {}
        for loss in losses:
            group = sorted((r for r in rows if r.loss == loss), key=lambda r: -r.metrics[metric])
            if len(group) > 1:
                gaps.setdefault(group[0].model, []).append(
                    group[0].metrics[metric] - group[1].metrics[metric]
                )
                winners_by_loss.setdefault(group[0].model, []).append(loss)
        if len(gaps) == 1:
            model, by = next(iter(gaps.items()))
            span = _f(min(by)) if len(by) == 1 else f"{_f(min(by))} to {_f(max(by))}"
            lines.append(f"**{model}** is the best model with every loss (by {span}).")
        elif winners_by_loss:
            lines.append(
                "No model is best with every loss: "
                + "; ".join(f"{m} wins with {', '.join(ls)}" for m, ls in winners_by_loss.items())
                + "."
            )
    return lines


def _balance_lines(rows: list[ResultRow]) -> list[str]:
    """How each loss trades precision against recall, averaged over models."""
    parts = []
    for loss in dict.fromkeys(row.loss for row in rows):
        group = [row for row in rows if row.loss == loss]
        precision = float(np.mean([row.metrics["test_precision"] for row in group]))
        recall = float(np.mean([row.metrics["test_recall"] for row in group]))
        if recall < precision - BALANCE_MARGIN:
            verdict = "under-segments (misses lesion pixels)"
        elif precision < recall - BALANCE_MARGIN:
            verdict = "over-segments (claims skin as lesion)"
        else:
            verdict = f"no lean either way (within {BALANCE_MARGIN:g})"
        parts.append(f"{loss}: precision {_f(precision)}, recall {_f(recall)}: {verdict}")
    return ["Why (test precision vs recall, mean over models): " + "; ".join(parts) + "."]


def _cost_line(rows: list[ResultRow]) -> str:
    models: dict[str, list[ResultRow]] = {}
    for row in rows:
        models.setdefault(row.model, []).append(row)
    parts = [
        f"{model} {group[0].params / 1e6:.2f} M parameters, "
        f"{np.mean([r.seconds_per_epoch for r in group]):.2f} s per epoch"
        for model, group in models.items()
    ]
    return "Cost: " + "; ".join(parts) + " (median epoch, training + validation)."


def _convergence_line(best: ResultRow) -> str:
    epoch, epochs = best.best_epoch, best.epochs
    where = f"{best.label}'s best validation epoch was {epoch:.0f} of {epochs}"
    if epoch >= LATE_FRACTION * epochs:
        return f"{where}: it was still improving, so more epochs may raise these numbers."
    if epoch < EARLY_FRACTION * epochs:
        return (
            f"{where}: validation IoU did not improve in the later epochs (a plateau or "
            "overfitting); the tested checkpoint is that best epoch."
        )
    return f"{where}."


def _baseline_line(ranking: list[ResultRow], metric: str, baselines: dict[str, float]) -> str:
    """Trivial masks for scale, and a warning naming the runs that do not clearly beat them."""
    name = RANK_METRICS[metric]
    quoted = ", ".join(f"{what} {_f(value)}" for what, value in baselines.items())
    line = f"For scale, trivial masks score {name}: {quoted}."
    floor = max(baselines.values())
    runs = [run for row in ranking for run in row.runs]
    failing = [run for run in runs if run.metric(metric) < floor + TRIVIAL_MARGIN]
    if len(failing) == len(runs):
        line += (
            f" **No run beats the best trivial mask by {TRIVIAL_MARGIN:g}**: the models have "
            "not learned the task within this budget, so the ranking above says little. Train "
            "longer (more epochs) before drawing conclusions."
        )
    elif failing:
        named = ", ".join(
            f"{run.model} + {run.loss} seed {run.seed} ({_f(run.metric(metric))})"
            for run in failing
        )
        verb = "run does" if len(failing) == 1 else "runs do"
        line += (
            f" {len(failing)} of {len(runs)} {verb} not beat the best trivial mask by "
            f"{TRIVIAL_MARGIN:g}: {named}. A run like that did not learn within this budget; it "
            "pulls its combination's mean down and widens the seed-to-seed spread."
        )
    return line


def conclude(
    rows: list[ResultRow], metric: str = "test_iou", baselines: dict[str, float] | None = None
) -> Conclusion:
    """Rank ``rows`` by ``metric`` (a key of :data:`RANK_METRICS`) and explain the result.

    ``baselines`` (optional) maps a trivial prediction (``"whole image"``) to its ``metric``
    on the same test images, quoted for scale.
    """
    if metric not in RANK_METRICS:
        raise ConfigError(f"Cannot rank by {metric!r}; choose one of {', '.join(RANK_METRICS)}.")
    if not rows:
        raise ConfigError("No finished runs to conclude from.")
    name = RANK_METRICS[metric]
    ranking = sorted(rows, key=lambda row: -row.metrics[metric])
    result = Conclusion(metric, ranking)
    best = ranking[0]
    if len(ranking) == 1:
        result.lines.append(f"Only {best.label} ran: {name} {_f(best.metrics[metric])}.")
    else:
        second = ranking[1]
        result.gap = best.metrics[metric] - second.metrics[metric]
        result.lines.append(
            f"**{best.label}** wins on {name}: {_f(best.metrics[metric])}, ahead of "
            f"{second.label} ({_f(second.metrics[metric])}) by {_f(result.gap)}; last is "
            f"{ranking[-1].label} ({_f(ranking[-1].metrics[metric])})."
        )
        result.lines.append(_noise_line(result, rows))
        paired = _paired_line(best, second)
        if paired:
            result.lines.append(paired)
    if baselines:
        result.lines.append(_baseline_line(ranking, metric, baselines))
    result.lines.extend(_loss_lines(rows, metric))
    result.lines.extend(_balance_lines(rows))
    result.lines.append(_cost_line(rows))
    result.lines.append(_convergence_line(best))
    return result

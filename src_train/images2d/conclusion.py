"""The conclusion of a model x loss comparison, generated from its numbers.

:func:`conclude` ranks the rows by a **validation** metric (the test images choose nothing)
and says, each point from the numbers: which combination validation chose and by how much, or
that the first ones are tied; the chosen combination's test figures (reported, not used); which
loss was best for each model and which model for each loss; how each loss trades precision
against recall (the "why": under- or over-segmentation); what the models cost; and whether the
chosen one was still improving at its last epoch.

**Run-to-run noise** of the gap between two rows, as a standard deviation, combines two
measured sources (their variances add; a source that was not measured adds nothing):

- seeds: the pooled seed-to-seed SD of the metric over rows with two or more seeds, scaled to
  a difference of two seed means (``sd x sqrt(1/n_a + 1/n_b)``);
- validation images: a paired bootstrap over the validation images (:data:`BOOTSTRAP_DRAWS`
  draws with replacement, fixed seed) of the mean per-image difference of the two rows.

A row whose gap to the first is at most :data:`NOISE_SIGMAS` of that SD is **tied** with it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from src_train.errors import ConfigError
from src_train.images2d.results import ResultRow

#: Metrics a comparison can be ranked by (validation only), and how the text names them.
RANK_METRICS = {
    "val_iou": "validation IoU",
    "val_iou_score": "validation IoU score",
    "val_dice": "validation Dice",
}

#: A gap is beyond the run-to-run noise when larger than this many SDs of the difference.
NOISE_SIGMAS = 2.0

#: Bootstrap draws over the validation images, and their seed.
BOOTSTRAP_DRAWS = 1000
BOOTSTRAP_SEED = 0

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


def reported_test_metric(metric: str) -> str:
    """The test column reported beside a validation ranking metric (``val_iou`` -> ``test_iou``)."""
    return "test_" + metric.removeprefix("val_")


@dataclass
class Conclusion:
    """The ranking and the sentences that explain it.

    Attributes:
        metric: the ranking metric (a key of :data:`RANK_METRICS`).
        ranking: rows, best first on validation.
        gap: first minus second on ``metric`` (NaN with one row).
        noise_sd: SD of that gap from run-to-run noise (module docstring; NaN when neither
            source was measured).
        beyond_noise: whether ``gap`` exceeds :data:`NOISE_SIGMAS` x ``noise_sd`` (None when
            not measured).
        tied: how many rows from the top are within the noise of the first (1: a clear first).
        lines: the conclusion, one markdown sentence or two per item.
    """

    metric: str
    ranking: list[ResultRow]
    gap: float = math.nan
    noise_sd: float = math.nan
    beyond_noise: bool | None = None
    tied: int = 1
    lines: list[str] = field(default_factory=list)

    @property
    def winner(self) -> ResultRow:
        """The row validation ranks first."""
        return self.ranking[0]


def _f(value: float) -> str:
    return f"{value:.3f}"


def _pooled_seed_sd(rows: list[ResultRow], metric: str) -> float:
    """Pooled seed-to-seed SD of ``metric`` over rows with >= 2 seeds (NaN: none)."""
    variances = [row.seed_sd(metric) ** 2 for row in rows if len(row.seeds) > 1]
    return float(math.sqrt(np.mean(variances))) if variances else math.nan


def _bootstrap_sd(first: ResultRow, other: ResultRow, metric: str) -> float:
    """SD of the mean per-validation-image difference over bootstrap draws of the images."""
    score = metric.removeprefix("val_")
    a, b = first.val_per_image(score), other.val_per_image(score)
    if a is None or b is None or len(a) != len(b) or len(a) < 2:
        return math.nan
    if first.runs[0].val_keys != other.runs[0].val_keys:
        return math.nan
    diff = a - b
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    draws = rng.integers(0, len(diff), size=(BOOTSTRAP_DRAWS, len(diff)))
    return float(diff[draws].mean(axis=1).std(ddof=1))


def pair_noise(
    first: ResultRow, other: ResultRow, rows: list[ResultRow], metric: str
) -> tuple[float, float, float]:
    """``(total, seeds, images)``: SDs of the gap between two rows (module docstring)."""
    pooled = _pooled_seed_sd(rows, metric)
    seeds = pooled * math.sqrt(1 / len(first.seeds) + 1 / len(other.seeds))
    images = _bootstrap_sd(first, other, metric)
    measured = [v for v in (seeds, images) if not math.isnan(v)]
    total = float(math.sqrt(sum(v * v for v in measured))) if measured else math.nan
    return total, seeds, images


def _noise_line(result: Conclusion, rows: list[ResultRow]) -> str:
    name = RANK_METRICS[result.metric]
    best, second = result.ranking[0], result.ranking[1]
    total, seeds, images = pair_noise(best, second, rows, result.metric)
    if math.isnan(total):
        return (
            "Run-to-run noise was not measured (one seed and no per-image validation scores); "
            "run with `--seeds 2` to learn whether this gap is larger than it."
        )
    result.noise_sd = total
    result.beyond_noise = bool(result.gap > NOISE_SIGMAS * total)
    parts = []
    if not math.isnan(seeds):
        parts.append(f"seeds SD {_f(seeds)}")
    else:
        parts.append("seeds not measured (one seed; `--seeds 2` measures them)")
    if not math.isnan(images):
        parts.append(f"validation images SD {_f(images)} (bootstrap, {BOOTSTRAP_DRAWS} draws)")
    # no measured spread: equal scores are a tie, any gap is beyond it
    spread_free = math.inf if result.gap > 0 else 0.0
    ratio = result.gap / total if total > 0 else spread_free
    verdict = "beyond the noise" if result.beyond_noise else "within the noise: a tie"
    return (
        f"Run-to-run noise of the {name} gap between the first two: SD {_f(total)} ("
        + "; ".join(parts)
        + f"). The gap is {ratio:.1f} times that (threshold {NOISE_SIGMAS:g}): {verdict}."
    )


def _tied_count(result: Conclusion, rows: list[ResultRow]) -> int:
    """Rows from the top whose gap to the first is within :data:`NOISE_SIGMAS` of the noise."""
    best = result.ranking[0]
    tied = 1
    for row in result.ranking[1:]:
        noise, _, _ = pair_noise(best, row, rows, result.metric)
        gap = best.metrics[result.metric] - row.metrics[result.metric]
        if math.isnan(noise) or gap > NOISE_SIGMAS * noise:
            break
        tied += 1
    return tied


def _paired_line(best: ResultRow, second: ResultRow, metric: str) -> str | None:
    """Image-by-image comparison of the first two rows on the same validation images."""
    score = metric.removeprefix("val_")
    a, b = best.val_per_image(score), second.val_per_image(score)
    if a is None or b is None or best.runs[0].val_keys != second.runs[0].val_keys:
        return None
    diff = a - b
    if len(diff) == 0:
        return None
    wins = int((diff > TIE_TOLERANCE).sum())
    losses = int((diff < -TIE_TOLERANCE).sum())
    return (
        f"On the same {len(diff)} validation images, {best.label} scores higher on {wins} and "
        f"lower on {losses} (mean per-image difference {_f(float(diff.mean()))})."
    )


def _test_line(result: Conclusion) -> str:
    """The test figures of what validation chose (reported, never used to choose)."""
    chosen = result.ranking[: result.tied]
    test = reported_test_metric(result.metric)
    name = RANK_METRICS[result.metric].replace("validation", "test")
    figures = "; ".join(
        f"{row.label} {name} {_f(row.metrics[test])}, test Dice {_f(row.metrics['test_dice'])}"
        for row in chosen
    )
    what = "what validation chose" if result.tied == 1 else "the tied combinations"
    return f"Test images (held out: reported for {what}, never used to rank): {figures}."


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
    """Trivial masks on the validation images for scale, and a warning naming the runs that
    do not clearly beat them."""
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


def _learned_nothing(ranking: list[ResultRow], metric: str, baselines: dict[str, float]) -> bool:
    floor = max(baselines.values()) if baselines else -math.inf
    return all(run.metric(metric) < floor + TRIVIAL_MARGIN for row in ranking for run in row.runs)


def _first_line(result: Conclusion, baselines: dict[str, float]) -> str:
    """Who validation chose, a tie, or that nobody learned."""
    ranking, metric = result.ranking, result.metric
    name = RANK_METRICS[metric]
    best, second, last = ranking[0], ranking[1], ranking[-1]
    scores = f"{name} {_f(best.metrics[metric])}, last is {last.label} ({_f(last.metrics[metric])})"
    if _learned_nothing(ranking, metric, baselines):
        return (
            f"**No winner**: no run beats a trivial mask on the validation images ({scores}); "
            "the order below is noise."
        )
    if result.tied > 1:
        tied = ", ".join(
            f"{row.label} ({_f(row.metrics[metric])})" for row in ranking[: result.tied]
        )
        return (
            f"**No winner on {name}: a tie** between {tied}, within {NOISE_SIGMAS:g} SD of the "
            f"run-to-run noise of the first; last is {last.label} ({_f(last.metrics[metric])})."
        )
    return (
        f"**{best.label}** is chosen on {name}: {_f(best.metrics[metric])}, ahead of "
        f"{second.label} ({_f(second.metrics[metric])}) by {_f(result.gap)}; last is "
        f"{last.label} ({_f(last.metrics[metric])})."
    )


def conclude(
    rows: list[ResultRow], metric: str = "val_iou", baselines: dict[str, float] | None = None
) -> Conclusion:
    """Rank ``rows`` by the validation ``metric`` (a key of :data:`RANK_METRICS`) and explain
    the result (module docstring).

    ``baselines`` (optional) maps a trivial prediction (``"whole image"``) to its ``metric``
    on the same validation images: a ranking of runs that do not beat them has no winner.
    """
    if metric not in RANK_METRICS:
        raise ConfigError(
            f"Cannot rank by {metric!r}; choose one of {', '.join(RANK_METRICS)} (the test "
            "images are reported, never used to choose)."
        )
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
        noise = _noise_line(result, rows)
        result.tied = _tied_count(result, rows)
        result.lines.append(_first_line(result, baselines or {}))
        result.lines.append(noise)
        paired = _paired_line(best, second, metric)
        if paired:
            result.lines.append(paired)
    result.lines.append(_test_line(result))
    if baselines:
        result.lines.append(_baseline_line(ranking, metric, baselines))
    if len(ranking) > 1 and (
        result.tied == len(ranking) or _learned_nothing(ranking, metric, baselines or {})
    ):
        result.lines.append(
            "No loss and no model is better than another here: every combination is within "
            "the run-to-run noise of the first, or none learned the task."
        )
    else:
        result.lines.extend(_loss_lines(rows, metric))
    result.lines.extend(_balance_lines(rows))
    result.lines.append(_cost_line(rows))
    result.lines.append(_convergence_line(best))
    return result

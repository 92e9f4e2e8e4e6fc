"""The written outcome of a comparison on a CT folder: ``results.csv``, ``runs.csv``,
``report.md`` and ``figures/curves_all.png`` (see :mod:`.ct_compare` for what is ranked).

The conclusion is generated from the numbers: the winner and its gap, the seed noise when two
or more seeds ran, the best loss per model, how each loss trades voxel precision against
recall, and the cost; it ends with the commands that give each run's detection metrics.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from src_train.atomic import write_text_atomic
from src_train.images2d.conclusion import BALANCE_MARGIN, NOISE_SIGMAS
from src_train.images2d.ct_compare import CT_RANK_NAME, CtRunRecord, ct_augment
from src_train.images2d.plots import plot_ct_curves
from src_train.images2d.report import command_section
from src_train.images2d.results import csv_text

if TYPE_CHECKING:
    from src_train.images2d.options import CompareOptions

FIGURES_DIR = "figures"
REPORT_FILE = "report.md"
RESULTS_FILE = "results.csv"
RUNS_FILE = "runs.csv"

#: Columns of ``results.csv`` of a CT comparison (means over seeds).
CT_RESULT_COLUMNS = (
    "model",
    "loss",
    "val_dice",
    "val_iou",
    "val_precision",
    "val_recall",
    "val_cpm",
    "best_val_dice",
    "best_epoch",
    "params",
    "seconds_per_epoch",
    "epochs",
    "seeds",
    "val_dice_sd",
    "arch",
    "filters",
    "depth",
)

#: Columns of ``runs.csv`` of a CT comparison.
CT_RUN_COLUMNS = (
    "name",
    "model",
    "loss",
    "seed",
    "val_dice",
    "val_iou",
    "val_precision",
    "val_recall",
    "val_cpm",
    "last_epoch",
    "best_val_dice",
    "best_epoch",
    "params",
    "seconds_per_epoch",
)


@dataclass(frozen=True)
class CtRow:
    """One model x loss of a CT comparison: its runs (one per seed) and their means."""

    runs: tuple[CtRunRecord, ...]

    @property
    def label(self) -> str:
        return self.runs[0].label

    def mean(self, metric: str) -> float:
        """Mean over seeds of ``val[metric]``."""
        return float(np.mean([run.val[metric] for run in self.runs]))

    def seed_sd(self) -> float:
        """Seed-to-seed standard deviation of the validation Dice (NaN for one seed)."""
        values = [run.val["dice"] for run in self.runs]
        return float(np.std(values, ddof=1)) if len(values) > 1 else math.nan

    def csv_values(self) -> dict[str, Any]:
        first = self.runs[0]
        return {
            "model": first.model,
            "loss": first.loss,
            **{f"val_{m}": self.mean(m) for m in ("dice", "iou", "precision", "recall", "cpm")},
            "best_val_dice": float(np.mean([r.best_val["dice"] for r in self.runs])),
            "best_epoch": float(np.mean([r.best_epoch for r in self.runs])),
            "params": first.params,
            "seconds_per_epoch": float(np.mean([r.seconds_per_epoch for r in self.runs])),
            "epochs": first.epochs,
            "seeds": len(self.runs),
            "val_dice_sd": self.seed_sd(),
            "arch": first.arch,
            "filters": first.filters,
            "depth": first.depth,
        }


def ct_rows(records: Sequence[CtRunRecord]) -> list[CtRow]:
    """One row per model x loss, best validation Dice first."""
    groups: dict[tuple[str, str], list[CtRunRecord]] = {}
    for record in records:
        groups.setdefault((record.model, record.loss), []).append(record)
    rows = [CtRow(tuple(runs)) for runs in groups.values()]
    return sorted(rows, key=lambda row: -row.mean("dice"))


def _f(value: float) -> str:
    return "–" if math.isnan(value) else f"{value:.3f}"


def ct_conclusion(rows: list[CtRow]) -> list[str]:
    """The conclusion's sentences, from the numbers (rows best first)."""
    best = rows[0]
    lines = []
    if len(rows) == 1:
        lines.append(f"Only {best.label} ran: validation Dice {_f(best.mean('dice'))}.")
    else:
        gap = best.mean("dice") - rows[1].mean("dice")
        lines.append(
            f"**{best.label}** has the highest validation Dice, {_f(best.mean('dice'))}, ahead of "
            f"{rows[1].label} ({_f(rows[1].mean('dice'))}) by {_f(gap)}; last is "
            f"{rows[-1].label} ({_f(rows[-1].mean('dice'))})."
        )
        sds = [row.seed_sd() for row in rows if len(row.runs) > 1]
        if sds:
            noise = math.sqrt(2 * float(np.mean(np.square(sds))) / min(len(r.runs) for r in rows))
            verdict = "beyond" if gap > NOISE_SIGMAS * noise else "within"
            lines.append(
                f"Seed noise: a difference of two combinations' means varies by about "
                f"{_f(noise)} (SD); the winner's gap is {verdict} {NOISE_SIGMAS:g} SD."
            )
        else:
            lines.append(
                "One seed per combination: the seed-to-seed noise is not measured (--seeds 2 "
                "or more measures it), so small gaps may be chance."
            )
    models = dict.fromkeys(r.runs[0].model for r in rows)
    for model in models:
        own = [r for r in rows if r.runs[0].model == model]
        if len(own) > 1:
            lines.append(
                f"Best loss for {model}: {own[0].runs[0].loss} ({_f(own[0].mean('dice'))})."
            )
    for row in rows:
        precision, recall = row.mean("precision"), row.mean("recall")
        if recall == 0 and precision == 0:
            how = "marks no nodule voxel of the validation slices"
        elif recall - precision > BALANCE_MARGIN:
            how = "over-segments (recall above precision: more voxels marked than true)"
        elif precision - recall > BALANCE_MARGIN:
            how = "under-segments (precision above recall: nodule voxels missed)"
        else:
            how = "is balanced"
        lines.append(f"{row.label} {how}: voxel precision {_f(precision)}, recall {_f(recall)}.")
    cost = "; ".join(
        f"{row.label} {row.runs[0].params:,} parameters, "
        f"{row.csv_values()['seconds_per_epoch']:.1f} s per epoch"
        for row in rows
    )
    lines.append(f"Cost: {cost}.")
    return lines


def _results_table(rows: list[CtRow]) -> str:
    head = "| rank | model | loss | val Dice | val IoU | precision | recall | best-ckpt Dice |"
    lines = [head, "|---:|---|---|---:|---:|---:|---:|---:|"]
    for rank, row in enumerate(rows, start=1):
        values = row.csv_values()
        sd = "" if math.isnan(row.seed_sd()) else f" ± {row.seed_sd():.3f}"
        lines.append(
            f"| {rank} | {values['model']} | {values['loss']} | {_f(values['val_dice'])}{sd} | "
            f"{_f(values['val_iou'])} | {_f(values['val_precision'])} | "
            f"{_f(values['val_recall'])} | {_f(values['best_val_dice'])} |"
        )
    return "\n".join(lines) + "\n"


def write_ct_report(
    out: str | Path,
    options: CompareOptions,
    records: list[CtRunRecord],
    commands: Sequence[Sequence[str]] = (),
) -> dict[str, Path]:
    """Write ``results.csv``, ``runs.csv``, the curves and ``report.md`` under ``out``."""
    out = Path(out)
    rows = ct_rows(records)
    files = {
        "results": write_text_atomic(
            out / RESULTS_FILE,
            csv_text(CT_RESULT_COLUMNS, [row.csv_values() for row in rows]),
            overwrite=True,
        ),
        "runs": write_text_atomic(
            out / RUNS_FILE,
            csv_text(CT_RUN_COLUMNS, [_run_values(r) for r in records]),
            overwrite=True,
        ),
        "fig_curves": plot_ct_curves(records, out / FIGURES_DIR / "curves_all.png"),
    }
    first = records[0]
    split = " --split test" if first.test_series else ""
    infer = [
        f"lunaseg infer {options.data} --checkpoint {out}/runs/{r.name}/checkpoint_best.pt "
        f"--out {out}/infer/{r.name}{split}"
        for r in records
    ]
    text = [
        "# Model x loss comparison on CT",
        "",
        f"{len(rows)} combinations x {options.seeds} seed(s) on `{options.data}`, ranked by "
        f"{CT_RANK_NAME}.",
        "",
        "## Data and budget (the same for every run)",
        "",
        f"- {_split_line(first)}",
        f"- Every run: {options.epochs} epochs of {options.epoch_samples} nodule crops, batch "
        f"{options.batch_size}, Adam (lr {options.lr:g}), augmentation "
        f"`{ct_augment(options.augment)}` (colour jitter is for RGB), depth "
        f"{options.depth}; device {first.device}. Image-set options (size, split) do not apply.",
        "",
        "## Results",
        "",
        _results_table(rows),
        "Val Dice, IoU, precision, recall: voxels of whole validation slices pooled, at each "
        "run's last validated epoch (the ranked number). Best-ckpt Dice: the same at the epoch "
        "of `checkpoint_best.pt` (kept by recall, then F1). ± = standard deviation over seeds. "
        f"Machine-readable: `{RESULTS_FILE}`, `{RUNS_FILE}`.",
        "",
        "## Conclusion",
        "",
        *[f"- {line}" for line in ct_conclusion(rows)],
        "",
        f"![curves]({FIGURES_DIR}/curves_all.png)",
        "",
        "## Detection metrics",
        "",
        "Voxel Dice says how well nodule voxels are marked, not how many nodules are found. For "
        "nodule recall, false positives per scan and the LUNA16 CPM, run each checkpoint over "
        + ("the test series" if first.test_series else "the series")
        + " and score its candidates:",
        "",
        "```",
        *infer,
        f"lunaseg eval --annotations {options.data}/annotations.csv --candidates "
        f"{out}/infer/<run>/candidates.csv",
        "```",
        "",
    ]
    text += command_section(commands)
    files["report"] = write_text_atomic(out / REPORT_FILE, "\n".join(text), overwrite=True)
    return files


def _split_line(record: CtRunRecord) -> str:
    """The series each run trained on, ranked on and left for testing (as ``lunaseg train``
    splits them)."""
    line = (
        f"{record.train_series} training series, {record.val_series} validation series (the "
        "ranking and each run's best epoch are chosen on them)"
    )
    if record.test_series:
        return (
            f"{line}, {record.test_series} test series (no choice looks at them: score the "
            "checkpoints there with `--split test`, below)."
        )
    return f"{line}; no test series (a folder of fewer than 3 series, or an older record)."


def _run_values(record: CtRunRecord) -> dict[str, Any]:
    return {
        "name": record.name,
        "model": record.model,
        "loss": record.loss,
        "seed": record.seed,
        **{f"val_{m}": record.val[m] for m in ("dice", "iou", "precision", "recall", "cpm")},
        "last_epoch": record.last_epoch,
        "best_val_dice": record.best_val["dice"],
        "best_epoch": record.best_epoch,
        "params": record.params,
        "seconds_per_epoch": record.seconds_per_epoch,
    }

"""The written outcome of a comparison: ``results.csv``, ``runs.csv``, ``report.md`` + PNGs.

``report.md`` holds, in this order: the data and the training budget, the results table, the
conclusion generated from the numbers (:mod:`.conclusion`), the figures (:mod:`.plots`), the
metric definitions, and the files. Figures go to ``OUT/figures/``; the markdown links them
relatively, so the folder can be moved or zipped whole.
"""

from __future__ import annotations

import math
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from src_train.atomic import write_text_atomic
from src_train.images2d.conclusion import RANK_METRICS, conclude
from src_train.images2d.dataset import ImageSet, Split
from src_train.images2d.metrics import IOU_SCORE_THRESHOLDS, score_images
from src_train.images2d.plots import (
    plot_cost,
    plot_examples,
    plot_hardest,
    plot_overlaid_curves,
    plot_results,
    plot_run_curves,
)
from src_train.images2d.results import (
    ResultRow,
    RunRecord,
    aggregate,
    write_results_csv,
    write_runs_csv,
)

if TYPE_CHECKING:
    from src_train.images2d.options import CompareOptions

FIGURES_DIR = "figures"
REPORT_FILE = "report.md"
RESULTS_FILE = "results.csv"
RUNS_FILE = "runs.csv"

#: Test images shown in the "hardest for all runs" figure.
HARDEST_COUNT = 4


def _f(value: float, digits: int = 3) -> str:
    return (
        "–"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else f"{value:.{digits}f}"
    )


def _mean_sd(row: ResultRow, metric: str) -> str:
    sd = row.seed_sd(metric)
    return _f(row.metrics[metric]) + ("" if math.isnan(sd) else f" ± {_f(sd)}")


def results_table(ranking: list[ResultRow], rank_by: str, tied: int = 1) -> str:
    """Markdown table of ``ranking`` (best first on the validation ``rank_by``; the first
    ``tied`` rows marked "tie" when more than one), seed SD after ±."""
    head = (
        f"| rank | model | loss | {RANK_METRICS[rank_by]} | test IoU | test IoU score "
        "| test Dice | precision | recall | parameters | s / epoch | best epoch |\n"
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    lines = [
        f"| {i}{' (tie)' if tied > 1 and i <= tied else ''} | {r.model} | {r.loss} "
        f"| {_mean_sd(r, rank_by)} | {_mean_sd(r, 'test_iou')} "
        f"| {_mean_sd(r, 'test_iou_score')} "
        f"| {_f(r.metrics['test_dice'])} | {_f(r.metrics['test_precision'])} "
        f"| {_f(r.metrics['test_recall'])} | {r.params:,} "
        f"| {_f(r.seconds_per_epoch, 2)} | {r.best_epoch:.0f} / {r.epochs} |"
        for i, r in enumerate(ranking, start=1)
    ]
    return head + "\n".join(lines) + "\n"


def _data_section(data: ImageSet, split: Split, options: CompareOptions) -> list[str]:
    source = data.source
    sizes = sorted({f"{c}x{r}" for r, c in data.original_sizes.tolist()})
    shown = ", ".join(sizes[:4]) + (f" and {len(sizes) - 4} more" if len(sizes) > 4 else "")
    lines = [
        f"- Folder: `{source.root}` ({source.layout} layout), {len(data)} image/mask pairs; "
        f"original sizes {shown} (width x height), resized to {options.size} x {options.size}.",
        f"- Split (seed {split.seed}): {len(split.train)} train / {len(split.val)} validation / "
        f"{len(split.test)} test images; lesion covers {100 * data.masks.mean():.1f} % of the "
        "pixels on average.",
    ]
    if source.unmatched_images or source.unmatched_masks:
        lines.append(
            f"- Left out: {len(source.unmatched_images)} image(s) without a mask, "
            f"{len(source.unmatched_masks)} mask(s) without an image (listed in `compare.json`)."
        )
    for note, names in data.notes.items():
        if note != "resized":
            more = " ..." if len(names) > 5 else ""
            lines.append(f"- {len(names)} file(s): {note} ({', '.join(names[:5])}{more}).")
    return lines


def _cpu_name() -> str:
    """The CPU's model name (Linux), else the machine type."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def _device_name(device: str) -> str:
    if device.startswith("cuda") and torch.cuda.is_available():
        return f"{device} ({torch.cuda.get_device_name()})"
    if device == "cpu":
        threads = torch.get_num_threads()
        return f"cpu ({_cpu_name()}, {threads} thread{'' if threads == 1 else 's'})"
    return device


def _model_description(record: RunRecord) -> str:
    up = f", {record.up} upsampling" if record.arch == "unet" else ", max-unpooling"
    return f"{record.model} ({record.arch}, {record.filters} filters{up})"


def _budget_section(options: CompareOptions, records: list[RunRecord]) -> list[str]:
    device = _device_name(records[0].device if records else options.device)
    seeds = ", ".join(str(options.seed + k) for k in range(options.seeds))
    models = ", ".join(dict.fromkeys(_model_description(r) for r in records))
    return [
        f"- Every run: {options.epochs} epochs, batch {options.batch_size}, Adam (lr "
        f"{options.lr:g}), augmentation `{options.augment}`, depth {options.depth}; seeds "
        f"{seeds}; device {device}.",
        f"- Models: {models}.",
        "- Test scores use each run's best-validation-IoU checkpoint.",
    ]


def _definitions() -> list[str]:
    low, high = IOU_SCORE_THRESHOLDS[0], IOU_SCORE_THRESHOLDS[-1]
    return [
        "- **IoU**: TP / (TP + FP + FN) per test image, averaged over images. **Dice**: "
        "2 TP / (2 TP + FP + FN), likewise. Precision TP / (TP + FP), recall TP / (TP + FN).",
        f"- **IoU score**: per image, the fraction of the thresholds {low:.2f}, "
        f"{IOU_SCORE_THRESHOLDS[1]:.2f}, ..., {high:.2f} that its IoU is strictly above "
        "(IoU 0.80 scores 0.6), averaged over images.",
        "- Training IoU is measured on augmented batches in training mode, validation IoU on "
        "whole validation images in evaluation mode: the two curves are not the same measure.",
        "- Seconds per epoch: median over epochs of training + validation wall time; on a "
        "shared machine these are indicative only.",
    ]


def _run_sections(
    records: list[RunRecord],
    images: np.ndarray,
    truth: np.ndarray,
    predictions: dict[str, np.ndarray],
    figures: Path,
    options: CompareOptions,
    files: dict[str, Path],
) -> list[str]:
    """Each run's curves and examples drawn (added to ``files``) and its report section:
    test figures, best validation epoch, size and cost."""
    per_run: list[str] = []
    for record in records:
        curves = plot_run_curves(record, figures / f"curves_{record.name}.png")
        examples = plot_examples(
            record,
            images,
            truth,
            predictions[record.name],
            figures / f"examples_{record.name}.png",
            options.examples,
        )
        files[f"fig_curves_{record.name}"] = curves
        files[f"fig_examples_{record.name}"] = examples
        per_run += [
            f"### {record.model} + {record.loss}, seed {record.seed}",
            "",
            f"Test IoU {_f(record.test['iou'])}, IoU score {_f(record.test['iou_score'])}; best "
            f"validation IoU {_f(record.val.get('iou', math.nan))} at epoch {record.best_epoch}; "
            f"{record.params:,} parameters; {_f(record.seconds_per_epoch, 2)} s per epoch. "
            f"Run folder: `runs/{record.name}/`.",
            "",
            f"![curves]({FIGURES_DIR}/{curves.name})",
            "",
            f"![examples]({FIGURES_DIR}/{examples.name})",
            "",
        ]
    return per_run


def write_report(
    out: str | Path,
    options: CompareOptions,
    records: list[RunRecord],
    predictions: dict[str, np.ndarray],
    data: ImageSet,
    split: Split,
    commands: Sequence[Sequence[str]] = (),
) -> dict[str, Path]:
    """Write ``results.csv``, ``runs.csv``, the figures and ``report.md`` under ``out``.

    ``predictions`` maps each run's name to its predicted test masks, bool
    ``(n_test, row, col)`` in the order of ``split.test``. Returns ``{name: path}`` of what was
    written (``results``, ``runs``, ``report`` and every figure).
    """
    out = Path(out)
    figures = out / FIGURES_DIR
    rows = aggregate(records)
    val = data.indices(split.val)
    whole = score_images(np.ones_like(data.masks[val]), data.masks[val]).mean()
    metric_key = options.rank_by.removeprefix("val_")
    verdict = conclude(
        rows,
        options.rank_by,
        baselines={"the whole image as lesion": whole[metric_key], "an empty mask": 0.0},
    )
    files: dict[str, Path] = {
        "results": write_results_csv(out / RESULTS_FILE, verdict.ranking, verdict.tied),
        "runs": write_runs_csv(out / RUNS_FILE, records),
    }
    test = data.indices(split.test)
    images, truth = data.images[test], data.masks[test]

    files["fig_results"] = plot_results(rows, figures / "results.png")
    files["fig_curves"] = plot_overlaid_curves(records, figures / "curves_all.png")
    files["fig_cost"] = plot_cost(rows, figures / "cost.png")
    first_seed = [r for r in records if r.seed == options.seed]
    files["fig_hardest"] = plot_hardest(
        first_seed,
        images,
        truth,
        [predictions[r.name] for r in first_seed],
        figures / "hardest.png",
        HARDEST_COUNT,
    )
    per_run = _run_sections(records, images, truth, predictions, figures, options, files)

    name = RANK_METRICS[options.rank_by]
    text: list[str] = [
        "# Model x loss comparison",
        "",
        f"{len(rows)} combinations x {options.seeds} seed(s) on {len(data)} images, ranked by "
        f"{name} (the test images are reported for each run, never used to rank).",
        "",
        "## Data",
        "",
        *_data_section(data, split, options),
        "",
        "## Training budget (the same for every run)",
        "",
        *_budget_section(options, records),
        "",
        "## Results",
        "",
        results_table(verdict.ranking, options.rank_by, verdict.tied),
        f"± = standard deviation over seeds. Machine-readable: `{RESULTS_FILE}` (one row per "
        f"model x loss), `{RUNS_FILE}` (one row per run).",
        "",
        f"![results]({FIGURES_DIR}/results.png)",
        "",
        "## Conclusion",
        "",
        *[f"- {line}" for line in verdict.lines],
        "",
        "## Curves",
        "",
        f"![all runs]({FIGURES_DIR}/curves_all.png)",
        "",
        "## Cost",
        "",
        f"![cost]({FIGURES_DIR}/cost.png)",
        "",
        "## Test images",
        "",
        "True positives green, false negatives (missed lesion) orange, false positives red.",
        "",
        f"![hardest]({FIGURES_DIR}/hardest.png)",
        "",
        "## Runs",
        "",
        *per_run,
        "## Definitions",
        "",
        *_definitions(),
        "",
    ]
    text += command_section(commands)
    files["report"] = write_text_atomic(out / REPORT_FILE, "\n".join(text), overwrite=True)
    return files


def command_section(commands: Sequence[Sequence[str]]) -> list[str]:
    """The report's last section: the command that made the comparison and any that resumed
    it (empty without commands)."""
    if not commands:
        return []
    note = []
    if len(commands) > 1:
        note = ["The first made the comparison; the others resumed it.", ""]
    return ["## Commands", "", *note, "```", *(" ".join(c) for c in commands), "```", ""]

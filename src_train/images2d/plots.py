"""The PNG figures of a comparison report (matplotlib's object API, no global pyplot state).

- :func:`plot_run_curves`: one run's training/validation loss and IoU per epoch.
- :func:`plot_overlaid_curves`: every run's validation IoU, training IoU and validation loss
  (relative to its first epoch, since losses differ in scale) on shared axes.
- :func:`plot_results`: test IoU and IoU score per model x loss (bars: means; dots: seeds).
- :func:`plot_cost`: parameters per model and seconds per epoch per run.
- :func:`plot_examples`: a run's best and worst test images, TP green / FN orange / FP red.
- :func:`plot_hardest`: the test images hardest for all runs, each run's prediction side by side.
- :func:`plot_ct_curves`: validation Dice, recall, precision per epoch of the runs on a CT folder.

Every function writes one PNG atomically and returns its path.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.layout_engine import ConstrainedLayoutEngine
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from src_train.atomic import atomic_write
from src_train.colors import ERROR_COLORS_RGB, ERROR_FN, ERROR_FP, ERROR_TP
from src_train.images2d.results import ResultRow, RunRecord
from src_train.metrics import error_overlay_rgb

#: Resolution of the saved figures, dots per inch.
DPI = 100

#: Opacity of the TP/FN/FP colours over an RGB image: lower than over a grey CT slice, so the
#: lesion's own colour and texture stay readable under the code.
OVERLAY_ALPHA_RGB = 0.45

#: Line colour per loss (others cycle through :data:`_EXTRA_COLORS`).
LOSS_COLORS = {"bce": "#1f77b4", "dice": "#9467bd", "focal": "#8c564b", "dice-fn": "#e377c2"}
_EXTRA_COLORS = ("#17becf", "#bcbd22", "#7f7f7f", "#d62728")

#: Space above the tallest bar of a bar chart, as a fraction of the data range.
LABEL_HEADROOM = 0.12

#: Line style per model, in the order models appear.
MODEL_STYLES = ("-", "--", ":", "-.")


def _save(fig: Figure, path: str | os.PathLike[str]) -> Path:
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    with atomic_write(path, "wb") as fh:
        fh.write(buffer.getvalue())
    return Path(path)


def _loss_color(loss: str, losses: Sequence[str]) -> str:
    if loss in LOSS_COLORS:
        return LOSS_COLORS[loss]
    extra = [name for name in losses if name not in LOSS_COLORS]
    return _EXTRA_COLORS[extra.index(loss) % len(_EXTRA_COLORS)]


def _series(history: list[dict[str, float]], key: str) -> tuple[np.ndarray, np.ndarray]:
    """Epochs and values of ``key`` where the history has it."""
    rows = [row for row in history if key in row and row[key] is not None]
    return (
        np.array([row["epoch"] for row in rows], dtype=float),
        np.array([row[key] for row in rows], dtype=float),
    )


def _unit_rgb(rgb: tuple[int, int, int]) -> tuple[float, float, float]:
    return (rgb[0] / 255, rgb[1] / 255, rgb[2] / 255)


def _legend_colours() -> list[Patch]:
    return [
        Patch(color=_unit_rgb(ERROR_COLORS_RGB[code]), label=name)
        for code, name in (
            (ERROR_TP, "true positive"),
            (ERROR_FN, "false negative (missed)"),
            (ERROR_FP, "false positive"),
        )
    ]


def plot_run_curves(record: RunRecord, path: str | os.PathLike[str]) -> Path:
    """Loss and IoU per epoch (training on augmented images, validation on whole images)."""
    fig = Figure(figsize=(9, 3.4), layout="constrained")
    loss_ax, iou_ax = fig.subplots(1, 2)
    for ax, metric, title in ((loss_ax, "loss", f"{record.loss} loss"), (iou_ax, "iou", "IoU")):
        for split, style in (("train", "-"), ("val", "-o")):
            epochs, values = _series(record.history, f"{split}/{metric}")
            ax.plot(epochs, values, style, markersize=3, label=split)
        ax.axvline(record.best_epoch, color="0.6", linewidth=0.8, linestyle=":")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    iou_ax.set_ylim(0, 1)
    iou_ax.legend(loc="lower right", fontsize=8)
    fig.suptitle(f"{record.model} + {record.loss}, seed {record.seed} (dotted: best epoch)")
    return _save(fig, path)


def _run_styles(records: Sequence[Any]) -> list[dict[str, Any]]:
    """Line style of each run: colour by loss, dash by model, faint for further seeds."""
    losses = list(dict.fromkeys(r.loss for r in records))
    models = list(dict.fromkeys(r.model for r in records))
    first_seed: dict[tuple[str, str], int] = {}
    for record in records:
        first_seed.setdefault((record.model, record.loss), record.seed)
    styles = []
    for record in records:
        main = first_seed[(record.model, record.loss)] == record.seed
        styles.append(
            {
                "color": _loss_color(record.loss, losses),
                "linestyle": MODEL_STYLES[models.index(record.model) % len(MODEL_STYLES)],
                "alpha": 1.0 if main else 0.35,
                "label": f"{record.model} + {record.loss}" if main else None,
            }
        )
    return styles


def plot_overlaid_curves(records: list[RunRecord], path: str | os.PathLike[str]) -> Path:
    """Validation IoU, training IoU and relative validation loss of every run, overlaid."""
    fig = Figure(figsize=(13, 4), layout="constrained")
    axes = fig.subplots(1, 3)
    for record, style in zip(records, _run_styles(records), strict=True):
        for ax, key in zip(axes[:2], ("val/iou", "train/iou"), strict=True):
            ax.plot(*_series(record.history, key), **style)
        epochs, val_loss = _series(record.history, "val/loss")
        if len(val_loss) and val_loss[0] > 0:
            axes[2].plot(epochs, val_loss / val_loss[0], **style)
    titles = ("validation IoU", "training IoU", "validation loss / its first value")
    for ax, title in zip(axes, titles, strict=True):
        ax.set_title(title)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0].set_ylim(0, 1)
    axes[1].set_ylim(0, 1)
    axes[0].legend(fontsize=8, loc="lower right")
    if any(style["label"] is None for style in _run_styles(records)):
        fig.suptitle("faint lines: further seeds")
    return _save(fig, path)


def plot_ct_curves(records: Sequence[Any], path: str | os.PathLike[str]) -> Path:
    """Validation Dice, recall and precision per validated epoch of every CT run, overlaid
    (``records``: :class:`~src_train.images2d.ct_compare.CtRunRecord`)."""
    fig = Figure(figsize=(13, 4), layout="constrained")
    axes = fig.subplots(1, 3)
    panels = (
        ("val/f1", "validation Dice"),
        ("val/recall", "validation recall"),
        ("val/precision", "validation precision"),
    )
    for record, style in zip(records, _run_styles(records), strict=True):
        for ax, (key, _title) in zip(axes, panels, strict=True):
            ax.plot(*_series(record.history, key), marker="o", markersize=3, **style)
    for ax, (_key, title) in zip(axes, panels, strict=True):
        ax.set_title(title)
        ax.set_ylim(-LABEL_HEADROOM / 4, 1 + LABEL_HEADROOM / 4)  # lines at 0 and 1 stay visible
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, loc="lower right")
    fig.suptitle("whole validation slices, voxels pooled over the held-out series")
    return _save(fig, path)


def plot_results(rows: list[ResultRow], path: str | os.PathLike[str]) -> Path:
    """Grouped bars: test IoU and test IoU score per model (groups) and loss (bars), the mean
    over seeds; black dots mark each seed's value when several ran."""
    fig = Figure(figsize=(11, 3.8), layout="constrained")
    axes = fig.subplots(1, 2)
    models = list(dict.fromkeys(r.model for r in rows))
    losses = list(dict.fromkeys(r.loss for r in rows))
    width = 0.8 / max(len(losses), 1)
    for ax, metric, title in (
        (axes[0], "test_iou", "test IoU (mean over images)"),
        (axes[1], "test_iou_score", "test IoU score (thresholds 0.50-0.95)"),
    ):
        for j, loss in enumerate(losses):
            group = {r.model: r for r in rows if r.loss == loss}
            x = (
                np.array([i for i, m in enumerate(models) if m in group])
                + (j - (len(losses) - 1) / 2) * width
            )
            present = [group[m] for m in models if m in group]
            values = [row.metrics[metric] for row in present]
            bars = ax.bar(x, values, width, label=loss, color=_loss_color(loss, losses))
            ax.bar_label(bars, fmt="%.3f", fontsize=7, padding=2)
            for xi, row in zip(x, present, strict=True):
                if len(row.seeds) > 1:  # each seed's value, so a failed seed is visible
                    seeds = row.by_seed(metric)
                    ax.scatter([xi] * len(seeds), seeds, s=12, color="black", zorder=3)
        ax.set_xticks(range(len(models)), models)
        ax.set_ylim(0, 1.12)
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8, loc="upper center", ncol=len(losses), frameon=False)
    return _save(fig, path)


def plot_cost(rows: list[ResultRow], path: str | os.PathLike[str]) -> Path:
    """Parameters per model, and median seconds per epoch per model x loss."""
    fig = Figure(figsize=(11, 3.4), layout="constrained")
    params_ax, time_ax = fig.subplots(1, 2)
    models = list(dict.fromkeys(r.model for r in rows))
    params = np.array([next(r.params for r in rows if r.model == m) for m in models], float)
    unit, name = (1e6, "millions") if params.max() >= 1e6 else (1e3, "thousands")
    bars = params_ax.bar(models, params / unit, color="0.5")
    params_ax.bar_label(bars, fmt="%.1f", fontsize=8)
    params_ax.set_title(f"trainable parameters ({name})")
    losses = list(dict.fromkeys(r.loss for r in rows))
    labels = [r.label for r in rows]
    bars = time_ax.bar(
        range(len(rows)),
        [r.seconds_per_epoch for r in rows],
        color=[_loss_color(r.loss, losses) for r in rows],
    )
    time_ax.bar_label(bars, fmt="%.2f", fontsize=8)
    time_ax.set_xticks(range(len(rows)), labels, rotation=30, ha="right", fontsize=8)
    time_ax.set_title("seconds per epoch (median; training + validation)")
    for ax in (params_ax, time_ax):
        ax.grid(axis="y", alpha=0.3)
        ax.margins(y=LABEL_HEADROOM)  # room for the value labels above the tallest bar
    return _save(fig, path)


def _show(ax, rgb: np.ndarray, title: str) -> None:  # type: ignore[no-untyped-def]
    ax.imshow(rgb, interpolation="nearest")
    ax.set_title(title, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_examples(
    record: RunRecord,
    images: np.ndarray,
    truth: np.ndarray,
    pred: np.ndarray,
    path: str | os.PathLike[str],
    count: int = 3,
) -> Path:
    """The ``count`` best and worst test images of a run by IoU, coloured TP/FN/FP.

    ``images`` uint8 ``(N, row, col, 3)``, ``truth`` and ``pred`` bool ``(N, row, col)``: the
    run's test images in the order of ``record.test_keys``.
    """
    iou = np.asarray(record.test_per_image["iou"])
    order = np.argsort(iou, kind="stable")
    count = max(1, min(count, len(order)))
    picks = [("best", i) for i in order[::-1][:count]] + [("worst", i) for i in order[:count]]
    # the bottom 5 % holds the colour legend
    fig = Figure(
        figsize=(2.6 * count, 5.9), layout=ConstrainedLayoutEngine(rect=(0, 0.05, 1, 0.95))
    )
    axes = np.asarray(fig.subplots(2, count, squeeze=False))
    for ax, (kind, i) in zip(axes.flat, picks, strict=True):
        overlay = error_overlay_rgb(images[i], pred[i], truth[i], OVERLAY_ALPHA_RGB)
        _show(ax, overlay, f"{kind}: {record.test_keys[i]}  IoU {iou[i]:.3f}")
    fig.suptitle(f"{record.model} + {record.loss}, seed {record.seed}: best and worst test images")
    fig.legend(handles=_legend_colours(), loc="lower center", ncol=3, fontsize=8)
    return _save(fig, path)


def plot_hardest(
    records: list[RunRecord],
    images: np.ndarray,
    truth: np.ndarray,
    preds: list[np.ndarray],
    path: str | os.PathLike[str],
    count: int = 4,
) -> Path:
    """The ``count`` test images with the lowest IoU averaged over runs: the image with its
    true outline, then each run's TP/FN/FP picture (rows: images, columns: runs).

    Pass one run per combination (e.g. the first seed's) to keep the figure readable."""
    iou = np.mean([r.test_per_image["iou"] for r in records], axis=0)
    picks = np.argsort(iou, kind="stable")[: max(1, min(count, len(iou)))]
    cols = len(records) + 1
    fig = Figure(
        figsize=(2.2 * cols, 2.3 * len(picks) + 0.6),
        layout=ConstrainedLayoutEngine(rect=(0, 0.04, 1, 0.96)),
    )
    axes = np.asarray(fig.subplots(len(picks), cols, squeeze=False))
    keys = records[0].test_keys
    for row, i in enumerate(picks):
        _show(axes[row, 0], images[i], f"{keys[i]} (mean IoU {iou[i]:.2f})")
        axes[row, 0].contour(truth[i], levels=[0.5], colors="white", linewidths=0.8)
        for col, (record, pred) in enumerate(zip(records, preds, strict=True), start=1):
            title = f"{record.model} + {record.loss}: {record.test_per_image['iou'][i]:.2f}"
            overlay = error_overlay_rgb(images[i], pred[i], truth[i], OVERLAY_ALPHA_RGB)
            _show(axes[row, col], overlay, title)
    fig.suptitle("hardest test images for all runs (white: true outline)")
    fig.legend(handles=_legend_colours(), loc="lower center", ncol=3, fontsize=8)
    return _save(fig, path)

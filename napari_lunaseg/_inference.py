"""Inference widget: run a checkpoint over the loaded series, off the GUI thread.

The job is the core's generator (:func:`src_train.infer.detector.iter_detection`: the segmenter,
then the checkpoint's candidate ranker) run by a napari
``thread_worker`` (stardist-napari's pattern, plus the cancel it lacks): each yielded progress
step reaches the GUI thread through the worker's ``yielded`` signal; Cancel asks the worker to
quit, which stops iterating at the next batch (nothing is written and no layer is touched).
The job also builds the run's ground truth for the series (the reviewed nodules and voxels,
grown as the checkpoint's run grew them: :func:`~napari_lunaseg._inference_model.series_truth`).

Closing the viewer while a job runs: napari asks its workers to quit and the widget's
destruction sets a flag; the job ends at the next batch. Nothing is written to disk by
inference, and results that arrive after the widget is gone are dropped.

State and rules live in a Qt-free :class:`~napari_lunaseg._inference_model.InferenceModel`;
this widget turns them into layers and table cells. Candidates are listed most probable first
(the ranker's score when the checkpoint has one) with their slice and, where there is a ground
truth, TP/FP/unscored; rows below the score threshold are greyed. The score threshold picks the
candidates shown as points and as predicted voxels in the error layer (TP green / FN orange /
FP red); a finished run starts the Inference task (:mod:`._screen`): its error layer and
candidates shown, the other tasks' layers hidden. Moving the view onto a candidate selects its
row. The result line says when the series was in the checkpoint's training set.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, FloatSpinBox, PushButton
from napari.layers import Image
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_info
from qtpy.QtGui import QBrush, QColor
from qtpy.QtWidgets import QHBoxLayout, QPushButton, QVBoxLayout, QWidget

from napari_lunaseg._images2d import (
    image_set_layers,
    image_set_worker,
    is_image_set_layer,
    show_image_set_prediction,
)
from napari_lunaseg._inference_model import (
    CANDIDATE_HEADERS,
    TRUTH_COLUMN,
    InferenceModel,
    SeriesTruth,
    series_truth,
)
from napari_lunaseg._layers import (
    PRED_RGBA,
    PROBABILITY_COLORMAP,
    RING_WIDTH,
    ROLE_CANDIDATES,
    ROLE_ERROR,
    ROLE_PRED,
    ROLE_PROB,
    ct_from_layer,
    error_colormap,
    hex_color,
    labels_layer_data,
    layer_info,
    lunaseg_meta,
    short_name,
    single_label_colormap,
)
from napari_lunaseg._review import send_to_review
from napari_lunaseg._screen import INFERENCE, screen_for, show_task
from napari_lunaseg._session import session_for
from napari_lunaseg._viewer_utils import (
    camera_of,
    ct_layers,
    fill_table,
    find_layer,
    make_progress_bar,
    make_table,
    make_wrapping_label,
    upsert_layer,
    zoom_to_nodule,
)
from src_train.colors import PREDICTION_RGB
from src_train.commands.infer_folder import DEMO_CHECKPOINT
from src_train.ct import CtVolume, xyz_to_zyx_mm
from src_train.errors import LunaSegError
from src_train.evaluate.review_requests import false_positive_requests, missed_nodule_requests
from src_train.infer import InferenceOptions, InferenceProgress, InferenceResult, TunerCache
from src_train.infer.detector import Detector, iter_detection, load_detector
from src_train.infer.operating_point import DEFAULT_SCORE_THRESHOLD
from src_train.luna import Nodule
from src_train.model import load_checkpoint
from src_train.records.threshold import DEFAULT_THRESHOLD, checkpoint_threshold

log = logging.getLogger(__name__)

DEVICES = ("auto", "cuda", "cpu")
#: Text colour of candidate rows below the score threshold.
BELOW_THRESHOLD_GREY = (150, 150, 150)

JobOutcome = tuple[Detector, InferenceResult, SeriesTruth | None]


def inference_job(
    ct: CtVolume,
    checkpoint: Path,
    options: InferenceOptions,
    tuners: TunerCache,
    annotations: list[Nodule] | None = None,
    luna_root: Path | None = None,
) -> Generator[InferenceProgress, None, JobOutcome]:
    """Load the detector, run it over the series and build the run's ground truth for it
    (runs in the worker thread)."""
    yield InferenceProgress(0, ct.shape_irc[0], f"loading {checkpoint.name}")
    detector = load_detector(checkpoint, device=options.device)
    result = yield from iter_detection(ct, detector, options, tuners=tuners)
    truth = series_truth(ct, annotations or [], luna_root, detector.truth)
    return detector, result, truth


class InferenceWidget(QWidget):
    """Pick a CT layer, checkpoint, device, thresholds and test-time mirroring; Run; see layers,
    metrics, candidates."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.worker: Any = None
        #: The last job's result (an ``InferenceResult``, or an image set's prediction).
        self.result: Any = None
        self.metrics: dict[str, Any] = {}
        self.model = InferenceModel(DEFAULT_SCORE_THRESHOLD)
        self._ct: CtVolume | None = None
        self._cancelled = False
        #: Whether the CT result shown was run mirrored (the result line says so).
        self._mirrored = False
        #: Measured thread/format/batch choices, shared by this widget's runs.
        self.tuners = TunerCache()
        # Set when the Qt widget is destroyed (e.g. the viewer closed): late results are dropped.
        self._gone = threading.Event()
        gone = self._gone
        self.destroyed.connect(lambda *_: gone.set())

        self.image = ComboBox(label="image", choices=self._image_choices)
        self.checkpoint = FileEdit(
            label="checkpoint", mode="r", filter="*.pt", value=str(DEMO_CHECKPOINT)
        )
        self.device = ComboBox(label="device", choices=list(DEVICES), value="auto")
        self.threshold = FloatSpinBox(
            label="probability threshold",
            min=0.01,
            max=0.99,
            step=0.05,
            value=DEFAULT_THRESHOLD,
            tooltip="mask threshold; set to the detection threshold of a checkpoint when chosen",
        )
        self.score_threshold = FloatSpinBox(
            label="score threshold",
            min=0.0,
            max=1.0,
            step=0.05,
            value=DEFAULT_SCORE_THRESHOLD,
            tooltip="candidates at or above this score are shown; the error layer follows",
        )
        self.mirror = CheckBox(
            text="mirror left-right",
            value=False,
            tooltip="also segment every slice mirrored left-right and average the two "
            "probabilities (test-time mirroring): twice the model time; CT series only",
        )
        self.run_button = PushButton(text="Run")
        form = Container(
            widgets=[
                self.image,
                self.checkpoint,
                self.device,
                self.threshold,
                self.score_threshold,
                self.mirror,
            ]
        )
        self.progress = make_progress_bar()
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.status = make_wrapping_label()
        self.metrics_label = make_wrapping_label()
        self.table = make_table(CANDIDATE_HEADERS)
        self.table.setColumnHidden(TRUTH_COLUMN, True)
        self.table.itemSelectionChanged.connect(self._on_row_selected)

        run_row = QHBoxLayout()
        run_row.addWidget(self.run_button.native)
        run_row.addWidget(self.cancel_button)
        self.send_fp_button = QPushButton("Review candidate as added")
        self.send_fp_button.setToolTip("send the selected false-positive candidate to review")
        self.send_fn_button = QPushButton("Review missed nodules")
        self.send_fn_button.setToolTip("send the annotated nodules no candidate hit to review")
        review_row = QHBoxLayout()
        review_row.addWidget(self.send_fp_button)
        review_row.addWidget(self.send_fn_button)
        layout = QVBoxLayout(self)
        layout.addWidget(form.native)
        layout.addLayout(run_row)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addWidget(self.metrics_label)
        layout.addWidget(self.table, stretch=1)
        layout.addLayout(review_row)

        self.send_fp_button.clicked.connect(self.review_selected_candidate)
        self.send_fn_button.clicked.connect(self.review_missed_nodules)
        self.run_button.changed.connect(self.run)
        self.checkpoint.changed.connect(self._take_checkpoint_threshold)
        self._take_checkpoint_threshold(self.checkpoint.value)
        self.score_threshold.changed.connect(self._apply_score_threshold)
        self.cancel_button.clicked.connect(self.cancel)
        self.viewer.layers.events.inserted.connect(self._reset_choices)
        self.viewer.layers.events.removed.connect(self._reset_choices)
        self.viewer.dims.events.point.connect(self._follow_view)
        camera_of(self.viewer).events.center.connect(self._follow_view)
        screen_for(self.viewer)  # the legend, the 3-D view
        session = session_for(self.viewer)
        session.checkpoint_changed.connect(self.set_checkpoint)
        if session.best_checkpoint is not None:
            self.set_checkpoint(session.best_checkpoint)

    # -- inputs ------------------------------------------------------------------------------
    def _image_choices(self, _widget: Any = None) -> list[tuple[str, Image]]:
        layers = ct_layers(self.viewer) + image_set_layers(self.viewer)
        return [(layer.name, layer) for layer in layers]

    def _reset_choices(self, _event: Any = None) -> None:
        self.image.reset_choices()

    def set_checkpoint(self, path: Path | str) -> None:
        """Use ``path`` as the checkpoint (called when a training run publishes its best one)."""
        self.checkpoint.value = str(path)
        self.status.setText(f"checkpoint: {path}")

    def _take_checkpoint_threshold(self, value: Any) -> None:
        """Set the probability threshold to the chosen checkpoint's detection threshold (the
        one its run validated with); an unreadable file leaves it (Run says why)."""
        path = Path(str(value)) if value else None
        if path is None or not path.is_file():
            return
        try:
            threshold = checkpoint_threshold(load_checkpoint(path))
        except LunaSegError:
            return
        self.threshold.value = threshold

    @property
    def running(self) -> bool:
        """True while a job is in flight."""
        return self.worker is not None

    # -- run / cancel ------------------------------------------------------------------------
    def run(self) -> Any:
        """Start inference on the chosen image layer; returns the worker (None on bad input)."""
        if self.running:
            show_info("Inference is already running; cancel it first.")
            return None
        layer = self.image.value
        if layer is None:
            self._fail("No image layer: open a CT series (File > Open, or the LunaSeg sample).")
            return None
        checkpoint = Path(str(self.checkpoint.value)) if self.checkpoint.value else None
        if checkpoint is None or not checkpoint.is_file():
            self._fail(
                f"Checkpoint {checkpoint} does not exist: choose a .pt file written by "
                "'lunaseg train' (or the shipped demo checkpoint)."
            )
            return None
        device, threshold = str(self.device.value), float(self.threshold.value)
        if is_image_set_layer(layer):  # a 2-D image set: its job lives in _images2d
            info = layer_info(layer)
            worker = image_set_worker(layer, checkpoint, device, threshold)
            return self.start_job(
                worker,
                f"running {checkpoint.name} on {layer.name}…",
                lambda result: self._on_image_set_returned(info, result),
            )
        try:
            self._ct = ct_from_layer(layer)
            options = InferenceOptions(
                device=device, threshold=threshold, mirror=bool(self.mirror.value)
            )
        except LunaSegError as exc:
            self._fail(str(exc))
            return None
        info = layer_info(layer)
        root = info.get("luna_root")
        worker = create_worker(
            inference_job,
            self._ct,
            checkpoint,
            options,
            self.tuners,
            list(info.get("nodules") or []),
            Path(root) if root else None,
            _ignore_errors=True,
            _start_thread=False,
        )
        mirror = options.mirror
        text = f"running {checkpoint.name} on {self._ct.series_uid}"
        text += ", mirrored left-right…" if mirror else "…"
        return self.start_job(worker, text, lambda outcome: self._on_returned(outcome, mirror))

    def start_job(self, worker: Any, text: str, on_returned: Callable[[Any], None]) -> Any:
        """Start ``worker`` (a napari worker yielding :class:`InferenceProgress`) as this
        widget's job: progress, cancel, errors and the end are handled here, its return value
        goes to ``on_returned``. Returns the worker."""
        self.result = None
        self._cancelled = False
        worker.yielded.connect(self._on_progress)
        worker.returned.connect(on_returned)
        worker.errored.connect(self._on_errored)
        worker.aborted.connect(self._on_aborted)
        worker.finished.connect(self._on_finished)
        self.worker = worker
        self.run_button.enabled = False
        self.cancel_button.setEnabled(True)
        self.progress.setRange(0, 0)
        self.status.setText(text)
        worker.start()
        return worker

    def cancel(self) -> None:
        """Ask the running job to stop at its next batch."""
        if self.worker is not None:
            self._cancelled = True
            self.worker.quit()
            self.status.setText("cancelling…")

    def _on_progress(self, step: InferenceProgress) -> None:
        if self._gone.is_set():
            return
        self.progress.setRange(0, max(int(step.total), 1))
        self.progress.setValue(int(step.done))
        self.progress.setFormat("%v/%m")
        if step.message:
            self.status.setText(step.message)

    def _on_aborted(self) -> None:
        if self._gone.is_set():
            return
        self.status.setText("Inference cancelled; no layer was changed.")
        show_info("LunaSeg inference cancelled.")

    def _on_errored(self, exc: BaseException) -> None:
        if self._gone.is_set():
            return
        if isinstance(exc, LunaSegError):
            self._fail(str(exc))
        else:
            log.exception("inference failed", exc_info=exc)
            self._fail(f"Inference failed: {type(exc).__name__}: {exc}")

    def _on_finished(self) -> None:
        self.worker = None
        if self._gone.is_set():
            return
        self.run_button.enabled = True
        self.cancel_button.setEnabled(False)
        # a finished job shows a full bar; a cancelled or failed one an empty bar
        self.progress.setRange(0, 1)
        self.progress.setFormat("%p%")
        self.progress.setValue(1 if self.result is not None else 0)

    def _fail(self, message: str) -> None:
        self.status.setText(message)
        show_error(message)

    # -- results -----------------------------------------------------------------------------
    @property
    def detector(self) -> Detector | None:
        """The detector of the last run on a CT."""
        return self.model.detector

    def _on_image_set_returned(self, info: dict[str, Any], result: Any) -> None:
        if self._gone.is_set():
            return
        self.result = result
        self.metrics, status, scores = show_image_set_prediction(self.viewer, info, result)
        self.status.setText(status)
        self.metrics_label.setText(scores)

    def _on_returned(self, outcome: JobOutcome, mirrored: bool = False) -> None:
        if self._gone.is_set() or self._ct is None:
            return
        ct = self._ct
        detector, result, truth = outcome
        self.result = result
        self._mirrored = mirrored
        self.model.set_result(ct, detector, result, truth)
        self._show_volumes(ct, result)
        self.table.setColumnHidden(TRUTH_COLUMN, truth is None)
        fill_table(self.table, self.model.rows())
        self._apply_score_threshold()
        show_task(self.viewer, INFERENCE)
        # the error layer carries the prediction at the score threshold: the raw prediction
        # and the probability stay a click away
        for role in (ROLE_PROB, ROLE_PRED) if truth is not None else (ROLE_PROB,):
            layer = find_layer(self.viewer, role, ct.series_uid)
            if layer is not None:
                layer.visible = False

    def _show_volumes(self, ct: CtVolume, result: InferenceResult) -> None:
        uid = ct.series_uid
        name = short_name(uid)
        prob = np.asarray(result.prob)  # float16: napari shows it as is, half the memory
        upsert_layer(
            self.viewer,
            (
                prob,
                {
                    "name": f"{name} probability",
                    "affine": ct.geometry.affine_irc_to_zyx(),
                    "colormap": PROBABILITY_COLORMAP,
                    "contrast_limits": [0.0, 1.0],
                    "blending": "additive",
                    "opacity": 0.5,
                    "metadata": lunaseg_meta(ROLE_PROB, ct.geometry, uid),
                },
                "image",
            ),
        )
        pred = np.ascontiguousarray(result.mask, dtype=bool)
        upsert_layer(
            self.viewer,
            labels_layer_data(
                pred.view(np.uint8),
                ct,
                role=ROLE_PRED,
                name=f"{name} prediction",
                colormap=single_label_colormap(PRED_RGBA),
                opacity=0.5,
            ),
        )

    def shown_candidates(self) -> list[Any]:
        """Candidates at or above the score threshold, most probable first."""
        return self.model.kept_candidates()

    def _apply_score_threshold(self, _value: Any = None) -> None:
        """Points, error layer, greyed rows, metrics and result line for the score threshold."""
        self.model.set_score_threshold(float(self.score_threshold.value))
        ct = self.model.ct
        if ct is None or self.model.result is None:
            return
        self._show_points(ct, self.model.kept_candidates())
        errors = self.model.errors()
        if errors is not None:
            layer = upsert_layer(
                self.viewer,
                labels_layer_data(
                    errors,
                    ct,
                    role=ROLE_ERROR,
                    name=f"{short_name(ct.series_uid)} errors",
                    colormap=error_colormap(),
                ),
            )
            layer.colormap = error_colormap()
        self.metrics = self.model.metrics()
        self._grey_rows()
        self._show_metrics()

    def _grey_rows(self) -> None:
        grey = QBrush(QColor(*BELOW_THRESHOLD_GREY))
        normal = self.table.palette().text()
        for row, kept in enumerate(self.model.kept):
            for column in range(self.table.columnCount()):
                item = self.table.item(row, column)
                if item is not None:
                    item.setForeground(normal if kept else grey)
                    item.setToolTip("" if kept else "below the score threshold: not shown")

    def _show_points(self, ct: CtVolume, candidates: list[Any]) -> None:
        uid = ct.series_uid
        centers = xyz_to_zyx_mm([c.center_xyz_mm for c in candidates])
        sizes = np.array([max(float(c.diameter_mm), 1.0) for c in candidates], dtype=float)
        upsert_layer(
            self.viewer,
            (
                centers,
                {
                    "name": f"{short_name(uid)} candidates",
                    "size": sizes if len(candidates) else 5.0,
                    "face_color": "transparent",
                    "border_color": hex_color(PREDICTION_RGB),
                    "border_width": RING_WIDTH,
                    "projection_mode": "rescale_spherical",
                    "features": {"probability": [float(c.probability) for c in candidates]},
                    "metadata": lunaseg_meta(ROLE_CANDIDATES, ct.geometry, uid),
                },
                "points",
            ),
        )

    def _show_metrics(self) -> None:
        cut = self.model.score_threshold
        parts = []
        for key, label in (("precision", "precision"), ("recall", "recall"), ("dice", "Dice")):
            if key in self.metrics:
                parts.append(f"{label} {float(self.metrics[key]):.3f}")
        if self.model.truth is None:
            text = "no annotations: no ground truth to compare with"
        else:
            found, total = self.model.nodule_recall()
            text = "voxel " + ", ".join(parts)
            text += f"; nodule recall {found}/{total} at score >= {cut:g}"
            text += f" (truth: {self.model.truth.source})"
        self.metrics_label.setText(text)
        n_kept = int(np.count_nonzero(self.model.kept))
        mirrored = " (mirrored left-right)" if self._mirrored else ""
        line = (
            f"done in {self.model.result.seconds:.1f} s{mirrored}: {n_kept} of "  # type: ignore[union-attr]
            f"{len(self.model.candidates)} candidate(s) at score >= {cut:g}"
        )
        left_out = self.model.result.left_out  # type: ignore[union-attr]
        if left_out:
            line += f" ({left_out} less probable left out: --max-candidates)"
        split = self.model.split_line()
        self.status.setText(f"{line}; {split}" if split else line)

    def _on_row_selected(self) -> None:
        row = self.table.currentRow()
        if 0 <= row < len(self.model.candidates):  # the table lists every candidate
            candidate = self.model.candidates[row]
            zoom_to_nodule(self.viewer, candidate.center_xyz_mm, candidate.diameter_mm)

    def _follow_view(self, _event: Any = None) -> None:
        """Select the row of the candidate the view is on (slice and canvas centre), if any."""
        if not self.model.candidates or self.viewer.dims.ndisplay != 2:
            return
        z = float(self.viewer.dims.point[-3])
        y, x = (float(v) for v in tuple(camera_of(self.viewer).center)[-2:])
        k = self.model.candidate_at((x, y, z))
        if k is None or k == self.table.currentRow():
            return
        self.table.blockSignals(True)
        self.table.selectRow(k)
        self.table.blockSignals(False)

    # -- review ------------------------------------------------------------------------------
    def _truth_nodules(self) -> list[Any]:
        """The nodules the table's TP/FP column is scored against (the run's reviewed ones),
        else the layer's annotations."""
        if self.model.truth is not None:
            return list(self.model.truth.nodules)
        layer = self.image.value
        return list(layer_info(layer).get("nodules") or []) if layer is not None else []

    def review_selected_candidate(self) -> None:
        """Send the selected candidate to review as a proposed addition, if it is a false
        positive (hits no annotated nodule)."""
        row = self.table.currentRow()
        if self._ct is None or not 0 <= row < len(self.model.candidates):
            show_info("Select a candidate in the table first.")
            return
        c = self.model.candidates[row]
        uid = self._ct.series_uid
        (request,) = false_positive_requests(
            uid, [c.center_xyz_mm], [c.diameter_mm], self._truth_nodules()
        )
        if request is None:
            show_info(f"Candidate {row + 1} hits an annotated nodule: it is no false positive.")
            return
        send_to_review(self.viewer, [request])

    def review_missed_nodules(self) -> None:
        """Send the annotated nodules no candidate hit (false negatives) to review, to check."""
        if self._ct is None or self.model.result is None:
            show_info("Run inference first.")
            return
        centers = [c.center_xyz_mm for c in self.model.candidates]
        requests = missed_nodule_requests(self._ct.series_uid, centers, self._truth_nodules())
        if not requests:
            show_info("No annotated nodule was missed.")
            return
        send_to_review(self.viewer, requests)

    def closeEvent(self, event: Any) -> None:
        """Stop a running job when the widget is closed."""
        if self.worker is not None:
            self.worker.quit()
        super().closeEvent(event)

"""GUI figures: threshold-to-layer latency and event-loop latency during background jobs.

Run under Xvfb (a real, shown viewer)::

    xvfb-run -a -s "-screen 0 1600x1200x24" .venv/bin/python benchmarks/bench_gui_threshold.py

1. Threshold: a synthetic 512x512x300 scan (5 nodules) in napari with the Mask QA widget; the
   threshold slider is moved through a sweep of values. Per move it times (a) the widget's
   update (``MaskState.set_threshold`` + ``layer.refresh()``: the mask layer is a view of the
   state's volume) and (b) the same plus the Qt event processing that repaints the canvas.
   The debounced details (table, boxes, Dice of every method) are timed separately.
2. Responsiveness: a 20 ms ``QTimer`` probes the event loop while (a) nothing runs, (b) the
   inference widget runs the model over the same scan (a worker thread), (c) the training
   widget runs a tiny job (a child process). Lateness = how much later than due each tick
   fired; the jobs are cancelled after the measuring window.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QApplication

#: Scan size of the threshold benchmark (index, row, col).
SHAPE_IRC = (300, 512, 512)
THRESHOLDS_HU = list(range(-760, -440, 20))
PROBE_INTERVAL_MS = 20


def _pump(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        QApplication.processEvents()
        time.sleep(0.002)


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def _summary(name: str, values_ms: list[float]) -> str:
    return (
        f"{name:<44} n={len(values_ms):>4}  median {statistics.median(values_ms):7.1f} ms  "
        f"p95 {_pct(values_ms, 95):7.1f} ms  max {max(values_ms):7.1f} ms"
    )


class LoopProbe:
    """Records how late a periodic QTimer fires (event-loop latency)."""

    def __init__(self, interval_ms: int = PROBE_INTERVAL_MS) -> None:
        self.interval_s = interval_ms / 1000.0
        self.lateness_ms: list[float] = []
        self._timer = QTimer()
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self._tick)
        self._last = 0.0

    def _tick(self) -> None:
        now = time.perf_counter()
        self.lateness_ms.append(max(0.0, (now - self._last - self.interval_s) * 1000.0))
        self._last = now

    def run(self, seconds: float, until: Callable[[], bool] | None = None) -> list[float]:
        """Probe for ``seconds`` (or until ``until()``), processing events."""
        self.lateness_ms.clear()
        self._last = time.perf_counter()
        self._timer.start()
        end = time.perf_counter() + seconds
        while time.perf_counter() < end and not (until and until()):
            QApplication.processEvents()
            time.sleep(0.001)
        self._timer.stop()
        return list(self.lateness_ms)


def bench_threshold(viewer, widget) -> None:
    """Time slider moves on the 512x512x300 scan."""
    update_ms, painted_ms = [], []
    for value in THRESHOLDS_HU:
        start = time.perf_counter()
        widget.threshold.value = value
        update_ms.append(widget.last_update_ms)
        QApplication.processEvents()  # the repaint of the canvas
        painted_ms.append((time.perf_counter() - start) * 1000.0)
    details_ms = []
    for _ in range(3):
        start = time.perf_counter()
        widget.update_details()
        details_ms.append((time.perf_counter() - start) * 1000.0)
    print(_summary("threshold -> layer updated (set+refresh)", update_ms))
    print(_summary("threshold -> canvas repainted", painted_ms))
    print(_summary("debounced details (table, boxes, Dice x3)", details_ms))


def _checkpoint(tmp: Path) -> Path:
    """The demo checkpoint, or an untrained U-Net (latency does not depend on the weights)."""
    from src_train.commands.infer_folder import DEMO_CHECKPOINT
    from src_train.model import ModelConfig, build_model, save_checkpoint

    if Path(DEMO_CHECKPOINT).is_file():
        return Path(DEMO_CHECKPOINT)
    config = ModelConfig()
    path = tmp / "untrained.pt"
    save_checkpoint(path, build_model(config), config)
    print("demo checkpoint missing: using an untrained U-Net")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="probe window per job")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--checkpoint", type=Path, help="model for inference (default: the demo checkpoint)"
    )
    args = parser.parse_args(argv)

    import napari

    from napari_lunaseg._inference import InferenceWidget
    from napari_lunaseg._mask_qa import MaskQAWidget
    from napari_lunaseg._sample_data import synthetic_bundle
    from napari_lunaseg._scan import bundle_layers
    from napari_lunaseg._training import TrainingWidget
    from src_train.synth import SynthConfig, write_dataset

    n_z, n_rows, n_cols = SHAPE_IRC
    config = SynthConfig(
        inplane_px_range=(n_rows, n_cols),
        slices_range=(n_z, n_z),
        nodules_per_scan_range=(5, 5),
    )
    start = time.perf_counter()
    bundle = synthetic_bundle(args.seed, config)
    print(f"scan {bundle.ct.shape_irc} generated in {time.perf_counter() - start:.1f} s")

    viewer = napari.Viewer(show=True)
    for data, kwargs, layer_type in bundle_layers(bundle):
        viewer._add_layer_from_data(data, kwargs, layer_type)
    qa = MaskQAWidget(viewer)
    viewer.window.add_dock_widget(qa, name="Mask QA")
    _pump(1.0)
    bench_threshold(viewer, qa)
    viewer.dims.ndisplay = 3  # only the nodules' boxes are re-uploaded to the GPU
    _pump(1.0)
    print("3-D display:")
    bench_threshold(viewer, qa)
    repaint_ms = []
    for _ in range(3):
        start = time.perf_counter()
        viewer.window._qt_viewer.canvas._scene_canvas.update()
        QApplication.processEvents()
        repaint_ms.append((time.perf_counter() - start) * 1000.0)
    print(_summary("3-D repaint with no change (renderer alone)", repaint_ms))
    viewer.dims.ndisplay = 2

    probe = LoopProbe()
    print(_summary("event loop idle", probe.run(3.0)))

    inference = InferenceWidget(viewer)
    viewer.window.add_dock_widget(inference, name="Inference")
    inference.device.value = "cpu"
    tmp = Path(tempfile.mkdtemp(prefix="lunaseg-bench-"))
    inference.checkpoint.value = str(args.checkpoint or _checkpoint(tmp))
    inference.run()
    lateness = probe.run(args.seconds, until=lambda: not inference.running)
    done = inference.progress.value()
    inference.cancel()
    probe.run(120.0, until=lambda: not inference.running)
    print(_summary(f"event loop during inference ({done} slices)", lateness))

    try:
        write_dataset(tmp / "data", n_scans=3, seed=1, config=SynthConfig.tiny())
        training = TrainingWidget(viewer)
        viewer.window.add_dock_widget(training, name="Training")
        training.data_dir.value = str(tmp / "data")
        training.run_dir.value = str(tmp / "run")
        training.epochs.value = 100
        training.epoch_samples.value = 64
        training.batch_size.value = 8
        training.device.value = "cpu"
        training.start()
        lateness = probe.run(args.seconds, until=lambda: not training.running)
        batches = sum(1 for e in training.events if e.get("kind") == "batch")
        training.cancel()
        probe.run(120.0, until=lambda: not training.running)
        print(_summary(f"event loop during training ({batches} batches)", lateness))
    finally:
        viewer.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

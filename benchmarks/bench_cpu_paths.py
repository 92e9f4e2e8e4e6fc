"""Per-series inference speed of every CPU execution path, side by side (no pass/fail).

On one synthetic series (default 130 x 512 x 512, made like ``lunaseg synth DIR --scans 1
--size 512 --slices 130 --seed 3``) and the demo checkpoint, one run measures:

* the **reference**: the unfused model, fp32, NCHW, batch 8, PyTorch's default threads, under
  ``torch.inference_mode``, on whole slices (what the issue's 59.3 s measured) and on the
  body box;
* **today**: :func:`src_train.infer.run_inference` as it ships (a fresh tuner each call, as in
  a fresh ``lunaseg infer`` process), on the body box and on whole slices;
* **candidates**: eager PyTorch with batch norms folded (threads 1/2, channels-last on/off,
  batch 1..16, two single-thread workers side by side), without folding, with oneDNN off;
  TorchScript (trace + freeze, + ``optimize_for_inference``); ``torch.compile`` (inductor,
  weights frozen; compile time measured apart); the model exported to ONNX and run by ONNX
  Runtime (CPU execution provider, all graph optimisations, threads 1/2, one or two sessions
  side by side) and by OpenVINO (latency / throughput hints); int8 (ONNX Runtime static
  quantisation) and a crop to the lung field instead of the body (numerics only decide).

Two tiers. The *sweep* runs every variant on a slab of ``--slab`` slices from the middle of the
series (body box) and scales its seconds to the whole series ("est." in the table); it picks
the best settings of each family. The *series* table then runs the references and each
family's best on all slices, ``--repeats`` rounds, interleaved (round r runs every path once),
and prints the median and the minimum. Seconds are those of the model passes (forward +
sigmoid, inputs made outside the timer, as the issue's reference counts them); the loop column
adds making the inputs and storing the outputs; the cpu column is the process's CPU seconds over
the model passes (all threads, spin-waits included), which for one-thread paths stays close to
the seconds an idle core needs even when neighbours load the machine.

Every path's probabilities are compared with the reference's (whole slices, fp32, unfused):
``max|dp|`` over all voxels of the slices it ran (voxels outside a crop count as 0) and the
mask voxels (p >= 0.5) that flip. A path is *equal* when max|dp| <= :data:`TOL_MAX_ABS_DP`
and at most :data:`TOL_MAX_FLIPS` voxels flip (with max|dp| that small a flip can only happen
at p within 1e-3 of 0.5).

The CPU is printed (model, avx2 / avx512 / bf16 flags). On a shared machine every figure
moves with the neighbours' work: the reference runs first and last too, and its spread and the
load average are printed next to the table.

Usage (about 70 minutes with the defaults on the shared 2-core dev CPU at load 5-14, where
``--repeats 2 --sweep-repeats 1 --slab 16`` took 67 minutes; ``--quick`` for a smoke run)::

    PYTHONPATH=$PWD .venv/bin/python benchmarks/bench_cpu_paths.py --json /tmp/cpu_paths.json
    PYTHONPATH=$PWD .venv/bin/python benchmarks/bench_cpu_paths.py --quick

ONNX Runtime (``pip install onnx onnxruntime onnxscript``) and OpenVINO (``pip install
openvino``) are optional: their paths are listed as skipped when the package is missing.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib
import json
import os
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import REFERENCE_BATCH, cpu_model_and_flags, flags_text, load_1min, load_text
from torch import nn

from src_train.anatomy import body_box, lung_field
from src_train.commands.infer_folder import DEMO_CHECKPOINT
from src_train.context import context_stack
from src_train.ct import CtVolume, load_ct
from src_train.devices import cpu_has_native_bf16
from src_train.infer import run_inference
from src_train.infer.runner import BODY_MARGIN_PX, fold_batch_norms
from src_train.model import load_model
from src_train.synth import SynthConfig, generate_scan, scan_seed, synthetic_series_uid

#: Tolerance for "equal outputs": largest |p - p_reference| over all voxels.
TOL_MAX_ABS_DP = 1e-3
#: Tolerance for "equal outputs": mask voxels (p >= 0.5) that may flip.
TOL_MAX_FLIPS = 10
#: Mask threshold (as :data:`src_train.records.threshold.DEFAULT_THRESHOLD`).
THRESHOLD = 0.5

SYNTH_SEED = 3
SYNTH_SIZE_PX = 512
SYNTH_SLICES = 130
#: Lung-field margin (mm) of the "lung box" crop (as a juxtapleural nodule's reach).
LUNG_BOX_MARGIN_MM = 10.0
#: Slices the int8 calibration reads.
INT8_CALIBRATION_SLICES = 8

DEFAULT_THREADS = torch.get_num_threads()


# ---------------------------------------------------------------------------------------------
# Machine facts
# ---------------------------------------------------------------------------------------------
def cpu_description() -> str:
    """CPU model, core count and the flags that decide the fast paths."""
    model, flags = cpu_model_and_flags()
    wanted = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "avx_vnni")
    shown = flags_text(flags, wanted)
    bf16 = cpu_has_native_bf16()
    return (
        f"CPU: {model}, {os.cpu_count()} logical CPUs; {shown}; torch capability "
        f"{torch.backends.cpu.get_cpu_capability()}, oneDNN bf16 {'yes' if bf16 else 'no'}"
    )


# ---------------------------------------------------------------------------------------------
# Paths
# ---------------------------------------------------------------------------------------------
BatchFn = Callable[[np.ndarray], np.ndarray]


@dataclass
class ExecPath:
    """One way to run the model over a series.

    Attributes:
        name: short label.
        family: group whose best member goes to the series table.
        run_batch: float32 inputs ``(N, C, H, W)`` -> probabilities float32 ``(N, H, W)``.
        threads: ``torch.set_num_threads`` during the run (ONNX Runtime / OpenVINO have their
            own thread settings, given in ``note``).
        batch_size: slices per call.
        crop: ``"body"`` (the box run_inference uses), ``"whole"`` or ``"lung"``.
        pad_multiple: inputs are padded (edge values repeated) to a multiple of this in-plane
            before ``run_batch`` and the outputs cropped back (exported graphs take padded
            inputs; the eager model pads itself).
        fixed_batch: the last batch is filled up to ``batch_size`` (static-shape graphs).
        setup_s: export / compile / session start-up seconds, paid once per process.
        note: settings in words.
        workers: parts of each batch run side by side (each with ``threads`` threads).
    """

    name: str
    family: str
    run_batch: BatchFn
    threads: int
    batch_size: int
    crop: str = "body"
    pad_multiple: int = 1
    fixed_batch: bool = False
    setup_s: float = 0.0
    note: str = ""
    workers: int = 1

    @property
    def cores(self) -> int:
        """Cores the path keeps busy (threads x side-by-side workers)."""
        return self.threads * self.workers


@dataclass
class Measurement:
    """Timings and numerics of one path."""

    path: ExecPath
    forward_s: list[float] = field(default_factory=list)
    loop_s: list[float] = field(default_factory=list)
    cpu_s: list[float] = field(default_factory=list)
    loads: list[float] = field(default_factory=list)
    max_abs_dp: float = float("nan")
    flips: int = -1
    scale: float = 1.0

    def add(self, forward_s: float, loop_s: float, cpu_s: float) -> None:
        self.forward_s.append(forward_s * self.scale)
        self.loop_s.append(loop_s * self.scale)
        self.cpu_s.append(cpu_s * self.scale)
        self.loads.append(load_1min())

    @property
    def equal(self) -> bool:
        return self.max_abs_dp <= TOL_MAX_ABS_DP and 0 <= self.flips <= TOL_MAX_FLIPS


def torch_batch_fn(module: Callable[[torch.Tensor], torch.Tensor], channels_last: bool) -> BatchFn:
    """A batch function for a PyTorch module (eager, scripted or compiled) returning logits."""
    return core_batch_fn(lambda t: torch.sigmoid(module(t)[:, 0]), channels_last)


def core_batch_fn(module: Callable[[torch.Tensor], torch.Tensor], channels_last: bool) -> BatchFn:
    """A batch function for a module returning probabilities ``(N, H, W)`` (:class:`PaddedCore`)."""

    def run(x: np.ndarray) -> np.ndarray:
        t = torch.from_numpy(x)
        if channels_last:
            t = t.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            return module(t).numpy()

    return run


def bf16_batch_fn(module: nn.Module, channels_last: bool) -> BatchFn:
    """Like :func:`torch_batch_fn` under bfloat16 autocast (run_inference on bf16 CPUs)."""

    def run(x: np.ndarray) -> np.ndarray:
        t = torch.from_numpy(x)
        if channels_last:
            t = t.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            logits = module(t)
        return torch.sigmoid(logits[:, 0].float()).numpy()

    return run


def split_batch_fn(run: BatchFn, workers: int, per_worker: Callable[[], None]) -> BatchFn:
    """Split each batch into ``workers`` parts run side by side in threads."""
    pool = ThreadPoolExecutor(workers, initializer=per_worker)

    def run_split(x: np.ndarray) -> np.ndarray:
        parts = np.array_split(x, min(workers, len(x)))
        return np.concatenate(list(pool.map(run, parts)))

    return run_split


def folded_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with batch norms folded into the convolutions (as run_inference)."""
    folded = copy.deepcopy(model).eval()
    fold_batch_norms(folded)
    return folded


class PaddedCore(nn.Module):
    """Input batch norm + U-Net on inputs already padded to the size multiple, + sigmoid.

    Exported graphs use this: no shape-dependent Python (the padding) inside the graph, and the
    sigmoid in it. Output: probabilities ``(N, H, W)``.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.model._forward_padded(self.model.input_norm(x))
        return torch.sigmoid(logits[:, 0])


def pad_to_multiple(x: np.ndarray, multiple: int) -> np.ndarray:
    """Pad ``(N, C, H, W)`` at the bottom / right, edge values repeated (as the model pads)."""
    pad_h = -x.shape[2] % multiple
    pad_w = -x.shape[3] % multiple
    if not pad_h and not pad_w:
        return x
    return np.pad(x, ((0, 0), (0, 0), (0, pad_h), (0, pad_w)), mode="edge")


# ---------------------------------------------------------------------------------------------
# Running a path over slices
# ---------------------------------------------------------------------------------------------
@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_slices(
    path: ExecPath,
    hu: np.ndarray,
    z_indices: np.ndarray,
    boxes: dict[str, tuple[int, int, int, int]],
    prob_out: np.ndarray,
    context: int,
) -> tuple[float, float, float]:
    """Run ``path`` over slices ``z_indices``; write probabilities into ``prob_out`` (zeros
    outside the crop). Returns (model-pass seconds, loop seconds, model-pass CPU seconds of
    the process: all threads, spinning included)."""
    r0, r1, c0, c1 = boxes[path.crop]
    rows, cols = slice(r0, r1), slice(c0, c1)
    prob_out[z_indices] = 0.0
    forward = 0.0
    cpu = 0.0
    started = time.perf_counter()
    with torch_threads(path.threads):
        for start in range(0, len(z_indices), path.batch_size):
            idx = z_indices[start : start + path.batch_size]
            x = context_stack(hu, idx, context, rows, cols)
            n = len(idx)
            if path.fixed_batch and n < path.batch_size:
                x = np.concatenate([x, np.repeat(x[-1:], path.batch_size - n, axis=0)])
            if path.pad_multiple > 1:
                x = pad_to_multiple(x, path.pad_multiple)
            t0, cpu0 = time.perf_counter(), time.process_time()
            probs = path.run_batch(x)
            forward += time.perf_counter() - t0
            cpu += time.process_time() - cpu0
            prob_out[idx, rows, cols] = probs[:n, : r1 - r0, : c1 - c0]
    return forward, time.perf_counter() - started, cpu


def compare(prob: np.ndarray, reference: np.ndarray) -> tuple[float, int]:
    """(max |dp|, mask voxels that flip) of ``prob`` against ``reference`` (same shape)."""
    dp = float(np.max(np.abs(prob - reference))) if prob.size else 0.0
    flips = int(np.count_nonzero((prob >= THRESHOLD) != (reference >= THRESHOLD)))
    return dp, flips


# ---------------------------------------------------------------------------------------------
# Building the candidates
# ---------------------------------------------------------------------------------------------
@dataclass
class Setup:
    """What every builder needs."""

    model: nn.Module
    folded: nn.Module
    example: np.ndarray  # one padded body-box batch (N, C, H, W), float32
    multiple: int
    box_slices: tuple[slice, slice]  # the body box (rows, cols)
    tmp: Path
    failures: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    onnx_export_s: float = 0.0


def eager_paths(s: Setup, threads: Sequence[int], batches: Sequence[int]) -> list[ExecPath]:
    paths: list[ExecPath] = []
    folded_cl = copy.deepcopy(s.folded).to(memory_format=torch.channels_last)
    for n_threads in threads:
        for cl in (False, True):
            module = folded_cl if cl else s.folded
            fmt = "channels-last" if cl else "NCHW"
            for b in batches:
                paths.append(
                    ExecPath(
                        f"eager folded {fmt} t{n_threads} b{b}",
                        "eager",
                        torch_batch_fn(module, cl),
                        n_threads,
                        b,
                        note=f"BN folded, fp32, {fmt}, {n_threads} thread(s), batch {b}",
                    )
                )
    if cpu_has_native_bf16():
        for cl in (False, True):
            module = folded_cl if cl else s.folded
            fmt = "channels-last" if cl else "NCHW"
            for b in batches:
                paths.append(
                    ExecPath(
                        f"eager folded bf16 autocast {fmt} t{DEFAULT_THREADS} b{b}",
                        "eager-bf16",
                        bf16_batch_fn(module, cl),
                        DEFAULT_THREADS,
                        b,
                        note=f"BN folded, bf16 autocast, {fmt}",
                    )
                )
    unfused_cl = copy.deepcopy(s.model).to(memory_format=torch.channels_last)
    for cl, module in ((False, s.model), (True, unfused_cl)):
        fmt = "channels-last" if cl else "NCHW"
        paths.append(
            ExecPath(
                f"eager unfused {fmt} t{DEFAULT_THREADS} b8",
                "eager-unfused",
                torch_batch_fn(module, cl),
                DEFAULT_THREADS,
                8,
                note=f"no BN folding, {fmt}",
            )
        )

    cl_run = torch_batch_fn(folded_cl, True)

    def no_onednn(x: np.ndarray) -> np.ndarray:
        with torch.backends.mkldnn.flags(enabled=False):
            return cl_run(x)

    paths.append(
        ExecPath(
            f"eager folded channels-last oneDNN off t{DEFAULT_THREADS} b8",
            "eager-onednn-off",
            no_onednn,
            DEFAULT_THREADS,
            8,
            note="torch.backends.mkldnn disabled (native / NNPACK convolutions)",
        )
    )
    for b in (8, 16):
        paths.append(
            ExecPath(
                f"eager folded channels-last 2 workers x t1 b{b}",
                "eager",
                split_batch_fn(
                    torch_batch_fn(folded_cl, True), 2, lambda: torch.set_num_threads(1)
                ),
                1,
                b,
                note="each batch split in two halves run side by side, 1 thread each",
                workers=2,
            )
        )
    return paths


def jit_paths(s: Setup, batch: int) -> list[ExecPath]:
    paths: list[ExecPath] = []
    example = torch.from_numpy(s.example)
    for ofi in (False, True):
        for cl in (False, True):
            t0 = time.perf_counter()
            module = copy.deepcopy(s.folded)
            x = example
            if cl:
                module = module.to(memory_format=torch.channels_last)
                x = example.contiguous(memory_format=torch.channels_last)
            try:
                with torch.inference_mode(), warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    scripted = torch.jit.freeze(torch.jit.trace(PaddedCore(module).eval(), x))
                    if ofi:
                        scripted = torch.jit.optimize_for_inference(scripted)
                    scripted(x)
            except Exception as exc:  # report and go on: a failed path is a finding
                s.failures.append(f"TorchScript ofi={ofi} cl={cl}: {exc!r:.200}")
                continue
            setup = time.perf_counter() - t0
            fmt = "channels-last" if cl else "NCHW"
            how = "trace+freeze+optimize_for_inference" if ofi else "trace+freeze"

            paths.append(
                ExecPath(
                    f"TorchScript {'ofi' if ofi else 'freeze'} {fmt} t{DEFAULT_THREADS} b{batch}",
                    "torchscript",
                    core_batch_fn(scripted, cl),
                    DEFAULT_THREADS,
                    batch,
                    pad_multiple=s.multiple,
                    setup_s=setup,
                    note=f"{how}, BN folded, {fmt}",
                )
            )
    return paths


def compile_path(s: Setup, threads: int, batch: int, channels_last: bool) -> ExecPath | None:
    """torch.compile (inductor, frozen weights), static shapes; setup_s = compile seconds."""
    try:
        import torch._inductor.config as inductor_config
    except ImportError:
        s.skipped.append("torch.compile: inductor not importable")
        return None
    torch._dynamo.reset()
    module = copy.deepcopy(s.folded)
    if channels_last:
        module = module.to(memory_format=torch.channels_last)
    compiled = torch.compile(PaddedCore(module).eval(), backend="inductor", dynamic=False)
    x = torch.from_numpy(np.repeat(s.example[:1], batch, axis=0))
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    try:
        with torch_threads(threads), inductor_config.patch(freezing=True), torch.inference_mode():
            t0 = time.perf_counter()
            compiled(x)
            first = time.perf_counter() - t0
            t0 = time.perf_counter()
            compiled(x)
            steady = time.perf_counter() - t0
    except Exception as exc:  # report and go on
        s.failures.append(f"torch.compile: {exc!r:.300}")
        return None
    fmt = "channels-last" if channels_last else "NCHW"
    return ExecPath(
        f"torch.compile inductor frozen {fmt} t{threads} b{batch}",
        "compile",
        core_batch_fn(compiled, channels_last),
        threads,
        batch,
        pad_multiple=s.multiple,
        fixed_batch=True,
        setup_s=max(first - steady, 0.0),
        note=f"inductor, freezing=True, dynamic=False, {fmt}, compile on first call",
    )


def export_onnx(s: Setup) -> Path | None:
    """The folded model (PaddedCore) as ONNX with dynamic N, H, W; None when it fails."""
    try:
        import onnx  # noqa: F401
    except ImportError:
        s.skipped.append("ONNX export: `onnx` not installed")
        return None
    out = s.tmp / "unet.onnx"
    core = PaddedCore(copy.deepcopy(s.folded)).eval()
    x = torch.from_numpy(s.example)
    t0 = time.perf_counter()
    try:
        from torch.export import Dim

        with warnings.catch_warnings(), contextlib.redirect_stdout(open(os.devnull, "w")):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                core,
                (x,),
                dynamo=True,
                input_names=["x"],
                output_names=["prob"],
                dynamic_shapes={"x": {0: Dim("n"), 2: Dim("h"), 3: Dim("w")}},
            )
            program.save(str(out))
    except Exception as exc:  # report and go on
        s.failures.append(f"ONNX export (dynamo): {exc!r:.300}")
        return None
    s.onnx_export_s = time.perf_counter() - t0
    return out


def ort_paths(s: Setup, onnx_path: Path, batches: Sequence[int]) -> list[ExecPath]:
    try:
        import onnxruntime as ort
    except ImportError:
        s.skipped.append("ONNX Runtime: `onnxruntime` not installed")
        return []
    paths: list[ExecPath] = []
    export_s = s.onnx_export_s

    def session(threads: int) -> tuple[Any, float]:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        t0 = time.perf_counter()
        sess = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        sess.run(None, {"x": s.example})
        return sess, time.perf_counter() - t0

    for threads in sorted({1, DEFAULT_THREADS}):
        sess, start_s = session(threads)
        for b in batches:

            def run(x: np.ndarray, sess: Any = sess) -> np.ndarray:
                return sess.run(None, {"x": x})[0]

            paths.append(
                ExecPath(
                    f"ONNX Runtime t{threads} b{b}",
                    "onnxruntime",
                    run,
                    threads,
                    b,
                    pad_multiple=s.multiple,
                    setup_s=export_s + start_s,
                    note=f"CPU EP, ORT_ENABLE_ALL, intra_op {threads}, sequential",
                )
            )
    if DEFAULT_THREADS > 1:
        sessions = [session(1)[0] for _ in range(2)]
        for b in (8, 16):
            pool = ThreadPoolExecutor(2)

            def run2(x: np.ndarray, pool: ThreadPoolExecutor = pool) -> np.ndarray:
                parts = np.array_split(x, 2)
                futures = [
                    pool.submit(sess.run, None, {"x": part})
                    for sess, part in zip(sessions, parts, strict=True)
                ]
                return np.concatenate([f.result()[0] for f in futures])

            paths.append(
                ExecPath(
                    f"ONNX Runtime 2 sessions x t1 b{b}",
                    "onnxruntime",
                    run2,
                    1,
                    b,
                    pad_multiple=s.multiple,
                    setup_s=export_s,
                    note="two sessions (intra_op 1) side by side, each half a batch",
                    workers=2,
                )
            )
    return paths


def ort_int8_path(s: Setup, onnx_path: Path, hu: np.ndarray, context: int) -> list[ExecPath]:
    """Static int8 quantisation (QDQ, per channel) calibrated on slices of the series."""
    try:
        import onnxruntime as ort
        from onnxruntime.quantization import (
            CalibrationDataReader,
            QuantFormat,
            QuantType,
            quantize_static,
        )
    except ImportError:
        s.skipped.append("int8: onnxruntime.quantization not available")
        return []
    n_z = hu.shape[0]
    picks = np.linspace(0, n_z - 1, INT8_CALIBRATION_SLICES).round().astype(int)
    mult = s.multiple

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._batches = iter(
                [{"x": s.example[:1]}]
                + [
                    {"x": pad_to_multiple(context_stack(hu, [z], context, *s.box_slices), mult)}
                    for z in picks
                ]
            )

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._batches, None)

    out = s.tmp / "unet_int8.onnx"
    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(open(os.devnull, "w")):
            warnings.simplefilter("ignore")
            quantize_static(
                str(onnx_path),
                str(out),
                Reader(),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
            )
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = DEFAULT_THREADS
        sess = ort.InferenceSession(str(out), options, providers=["CPUExecutionProvider"])
        sess.run(None, {"x": s.example})
    except Exception as exc:  # report and go on
        s.failures.append(f"int8 quantisation: {exc!r:.300}")
        return []
    setup = time.perf_counter() - t0

    def run(x: np.ndarray) -> np.ndarray:
        return sess.run(None, {"x": x})[0]

    return [
        ExecPath(
            f"ONNX Runtime int8 QDQ t{DEFAULT_THREADS} b8",
            "int8",
            run,
            DEFAULT_THREADS,
            8,
            pad_multiple=s.multiple,
            setup_s=setup,
            note=f"static int8 (QDQ, per channel), {INT8_CALIBRATION_SLICES} calibration slices",
        )
    ]


def openvino_paths(s: Setup, onnx_path: Path, batches: Sequence[int]) -> list[ExecPath]:
    try:
        import openvino as ov
    except ImportError:
        s.skipped.append("OpenVINO: `openvino` not installed")
        return []
    core = ov.Core()
    t0 = time.perf_counter()
    model = core.read_model(str(onnx_path))
    read_s = time.perf_counter() - t0
    paths: list[ExecPath] = []
    # (label, family, config, streams, threads per stream)
    precisions = [("f32", "openvino")]
    with contextlib.suppress(Exception):
        if "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
            precisions.append(("bf16", "openvino-bf16"))
    configs: list[tuple[str, str, dict[str, Any], int, int]] = []
    for precision_hint, family in precisions:
        tag = "" if precision_hint == "f32" else f" {precision_hint}"
        base = {"INFERENCE_PRECISION_HINT": precision_hint}
        configs.append(
            (
                f"latency{tag} t{DEFAULT_THREADS}",
                family,
                {**base, "PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": DEFAULT_THREADS},
                1,
                DEFAULT_THREADS,
            )
        )
        if DEFAULT_THREADS > 1:
            configs.append(
                (
                    f"latency{tag} t1",
                    family,
                    {**base, "PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": 1},
                    1,
                    1,
                )
            )
            configs.append(
                (
                    f"throughput{tag} {DEFAULT_THREADS} streams x t1",
                    family,
                    {**base, "PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": DEFAULT_THREADS},
                    DEFAULT_THREADS,
                    1,
                )
            )
    for label, family, config, streams, threads in configs:
        t0 = time.perf_counter()
        try:
            compiled = core.compile_model(model, "CPU", config)
            precision = str(compiled.get_property("INFERENCE_PRECISION_HINT"))
            queue = ov.AsyncInferQueue(compiled, streams)
            request = compiled.create_infer_request()
            request.infer({0: s.example})
        except Exception as exc:  # report and go on
            s.failures.append(f"OpenVINO {label}: {exc!r:.300}")
            continue
        setup = read_s + time.perf_counter() - t0
        for b in batches:
            if streams == 1:

                def run(x: np.ndarray, request: Any = request) -> np.ndarray:
                    return request.infer({0: x})[0].copy()

            else:

                def run(x: np.ndarray, queue: Any = queue, streams: int = streams) -> np.ndarray:
                    parts = np.array_split(x, min(streams, len(x)))
                    results: dict[int, np.ndarray] = {}

                    def done(req: Any, i: int) -> None:
                        results[i] = req.get_output_tensor(0).data.copy()

                    queue.set_callback(done)
                    for i, part in enumerate(parts):
                        queue.start_async({0: part}, i)
                    queue.wait_all()
                    return np.concatenate([results[i] for i in range(len(parts))])

            paths.append(
                ExecPath(
                    f"OpenVINO {label} b{b}",
                    family,
                    run,
                    threads,
                    b,
                    pad_multiple=s.multiple,
                    setup_s=s.onnx_export_s + setup,
                    note=f"from ONNX, {precision}, {config}",
                    workers=streams,
                )
            )
    return paths


def today_path(ct: CtVolume, model: nn.Module, crop: bool) -> ExecPath:
    """run_inference as shipped; run_batch is unused (see :func:`run_today`)."""
    return ExecPath(
        f"today: run_inference ({'body box' if crop else 'whole slices'})",
        "today",
        lambda x: x,
        DEFAULT_THREADS,
        0,
        crop="body" if crop else "whole",
        note="fresh tuner each call; seconds = model_seconds; loop = whole call incl. grouping",
    )


def run_today(
    path: ExecPath, ct: CtVolume, model: nn.Module, prob_out: np.ndarray
) -> tuple[float, float, float, str]:
    """Call run_inference with a fresh tuner; (model seconds, call seconds, its settings)."""
    t0, cpu0 = time.perf_counter(), time.process_time()
    # a fresh tuner per call: it tunes as in a new process
    res = run_inference(ct, model, device="cpu", crop_to_body=path.crop == "body")
    call_s = time.perf_counter() - t0
    cpu_s = time.process_time() - cpu0
    prob_out[:] = res.prob
    how = res.settings.describe() if res.settings else "?"
    return res.model_seconds, call_s, cpu_s, how


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------
def make_series(size: int, slices: int) -> CtVolume:
    """The first scan of ``lunaseg synth DIR --scans 1 --size SIZE --slices SLICES --seed 3``,
    made in memory (the same voxels and geometry as that command writes)."""
    config = replace(
        SynthConfig(),
        inplane_px_range=(size, size),
        inplane_px_multiple=1,
        slices_range=(slices, slices),
    )
    # write_dataset seeds scan 0 this way; private, but the benchmark must make the same scan.
    uid = synthetic_series_uid(SYNTH_SEED, 0)
    return generate_scan(uid, scan_seed(SYNTH_SEED, 0), config, kind_offset=0).ct


def lung_box(ct: CtVolume, multiple: int, margin_px: int) -> tuple[int, int, int, int]:
    """In-plane box around the lung field (margin :data:`LUNG_BOX_MARGIN_MM`) + ``margin_px``."""
    field_mask = lung_field(ct.hu, ct.geometry.spacing_irc_mm, LUNG_BOX_MARGIN_MM)
    rows = np.flatnonzero(field_mask.any(axis=(0, 2)))
    cols = np.flatnonzero(field_mask.any(axis=(0, 1)))
    n_rows, n_cols = field_mask.shape[1:]
    r0 = max(int(rows[0]) - margin_px, 0) // multiple * multiple
    c0 = max(int(cols[0]) - margin_px, 0) // multiple * multiple
    return (
        r0,
        min(int(rows[-1]) + 1 + margin_px, n_rows),
        c0,
        min(int(cols[-1]) + 1 + margin_px, n_cols),
    )


def fmt_row(m: Measurement, ref_s: float, est: bool) -> str:
    med = statistics.median(m.forward_s)
    low = min(m.forward_s)
    loop = statistics.median(m.loop_s)
    cpu = statistics.median(m.cpu_s)
    ok = "yes" if m.equal else "NO"
    return (
        f"{m.path.name:<52} {med:8.1f} {low:8.1f} {loop:8.1f} {cpu:7.1f} {ref_s / med:7.2f}x "
        f"{m.max_abs_dp:9.1e} {m.flips:6d} {ok:>5} {m.path.setup_s:7.1f}" + (" est." if est else "")
    )


HEADER = (
    f"{'path':<52} {'median':>8} {'min':>8} {'loop':>8} {'cpu':>7} {'vs ref':>8} "
    f"{'max|dp|':>9} {'flips':>6} {'equal':>5} {'setup':>7}"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=Path, help="a series file instead of the synthetic one")
    parser.add_argument("--size", type=int, default=SYNTH_SIZE_PX)
    parser.add_argument("--slices", type=int, default=SYNTH_SLICES)
    parser.add_argument("--checkpoint", type=Path, default=DEMO_CHECKPOINT)
    parser.add_argument("--repeats", type=int, default=3, help="rounds of the series table")
    parser.add_argument("--sweep-repeats", type=int, default=2, help="rounds of the sweep")
    parser.add_argument("--slab", type=int, default=32, help="slices the sweep runs")
    parser.add_argument("--batches", default="1,2,4,8,16", help="batch sizes of the sweep")
    parser.add_argument("--skip", default="", help="families to skip, comma separated")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--quick", action="store_true", help="smoke run: small series, 1 round")
    args = parser.parse_args()
    if args.quick:
        args.size, args.slices, args.repeats, args.sweep_repeats, args.slab = 192, 20, 1, 1, 16
        args.batches = "1,8"
    batches = [int(b) for b in args.batches.split(",")]
    skip = {f.strip() for f in args.skip.split(",") if f.strip()}

    print(cpu_description())
    print(
        f"torch {torch.__version__}, default threads {DEFAULT_THREADS}, load average {load_text()}"
    )
    for name in ("onnxruntime", "openvino", "onnx"):
        try:
            print(f"{name} {importlib.import_module(name).__version__}")
        except ImportError:
            print(f"{name}: not installed")

    with tempfile.TemporaryDirectory(prefix="bench-cpu-paths-") as tmp_name:
        tmp = Path(tmp_name)
        ct = load_ct(args.series) if args.series else make_series(args.size, args.slices)
        hu = ct.hu
        n_z = hu.shape[0]
        model, config = load_model(args.checkpoint, device="cpu")
        context, multiple = config.context_slices, config.size_multiple
        margin = BODY_MARGIN_PX
        body = body_box(hu, multiple, margin)
        boxes = {"body": body, "whole": (0, hu.shape[1], 0, hu.shape[2])}
        boxes["lung"] = lung_box(ct, multiple, margin)
        for key, (r0, r1, c0, c1) in boxes.items():
            share = (r1 - r0) * (c1 - c0) / (hu.shape[1] * hu.shape[2])
            print(f"{key} box rows {r0}:{r1} cols {c0}:{c1} ({share:.0%} of the slice)")
        print(f"series {ct.series_uid} {hu.shape} (z, y, x)")

        r0, r1, c0, c1 = body
        example = pad_to_multiple(
            context_stack(
                hu, np.arange(min(REFERENCE_BATCH, n_z)), context, slice(r0, r1), slice(c0, c1)
            ),
            multiple,
        )
        s = Setup(model, folded_copy(model), example, multiple, (slice(r0, r1), slice(c0, c1)), tmp)

        reference = ExecPath(
            f"reference fp32 NCHW unfused t{DEFAULT_THREADS} b8 (whole)",
            "reference",
            torch_batch_fn(model, False),
            DEFAULT_THREADS,
            REFERENCE_BATCH,
            crop="whole",
            note="the issue's baseline",
        )
        all_z = np.arange(n_z)
        ref_prob = np.zeros(hu.shape, dtype=np.float32)
        work = np.zeros(hu.shape, dtype=np.float32)
        torch_batch_fn(model, False)(example[:1])  # warm-up
        ref_m = Measurement(reference)
        ref_m.add(*run_slices(reference, hu, all_z, boxes, ref_prob, context))
        ref_m.max_abs_dp, ref_m.flips = 0.0, 0
        print(f"reference (start): {ref_m.forward_s[0]:.1f} s, load {ref_m.loads[0]:.2f}")
        n_mask = int(np.count_nonzero(ref_prob >= THRESHOLD))
        p16 = ref_prob.astype(np.float16).astype(np.float32)
        dp16, flips16 = compare(p16, ref_prob)
        print(
            f"reference mask: {n_mask} voxels; float16 storage of its probabilities: "
            f"max|dp| {dp16:.1e}, {flips16} flips"
        )
        del p16

        # ---------------- sweep on a slab ----------------
        slab_n = min(args.slab, n_z)
        z_mid = (n_z - slab_n) // 2
        slab = np.arange(z_mid, z_mid + slab_n)
        scale = n_z / slab_n
        sweep: list[ExecPath] = []
        if "eager" not in skip:
            sweep += eager_paths(s, sorted({1, DEFAULT_THREADS}), batches)
        if "torchscript" not in skip:
            sweep += jit_paths(s, REFERENCE_BATCH)
        onnx_path = None if {"onnxruntime", "openvino", "int8"} <= skip else export_onnx(s)
        if onnx_path is not None:
            if "onnxruntime" not in skip:
                sweep += ort_paths(s, onnx_path, batches)
            if "openvino" not in skip:
                sweep += openvino_paths(s, onnx_path, batches)
            if "int8" not in skip:
                sweep += ort_int8_path(s, onnx_path, hu, context)
        if s.onnx_export_s:
            print(f"ONNX export (dynamo exporter): {s.onnx_export_s:.1f} s")
        sweep_m = [Measurement(p, scale=scale) for p in sweep]
        print(f"\nsweep: {len(sweep)} paths x {args.sweep_repeats} rounds on {slab_n} slices")
        ref_slab = ref_prob[slab]
        for round_i in range(args.sweep_repeats):
            for m in sweep_m:
                m.add(*run_slices(m.path, hu, slab, boxes, work, context))
                fwd = m.forward_s[-1] / scale
                print(f"    {m.path.name}: {fwd:.2f} s, load {m.loads[-1]:.1f}", flush=True)
                if round_i == 0:
                    m.max_abs_dp, m.flips = compare(work[slab], ref_slab)
            print(f"  sweep round {round_i + 1} done, load {load_1min():.2f}", flush=True)

        def best(
            family: str, keep: Callable[[ExecPath], bool] = lambda p: True, equal: bool = True
        ) -> Measurement | None:
            """The fastest (by min) path of a family among those ``keep`` accepts (and equal)."""
            found = [
                m
                for m in sweep_m
                if m.path.family == family and (m.equal or not equal) and keep(m.path)
            ]
            return min(found, key=lambda m: min(m.forward_s)) if found else None

        # ---------------- the series table ----------------
        series: list[ExecPath] = [
            reference,
            replace(reference, name=reference.name.replace("(whole)", "(body box)"), crop="body"),
            today_path(ct, model, crop=True),
            today_path(ct, model, crop=False),
        ]
        winners: dict[str, Measurement] = {}
        for family in ("eager", "torchscript", "onnxruntime", "openvino"):
            m = best(family)
            if m is None:
                continue
            winners[family] = m
            series.append(m.path)
            # The best on the other core count too: on a shared machine the winner flips.
            other = best(family, lambda p, c=m.path.cores: p.cores != c)
            if other is not None and family != "torchscript":
                series.append(other.path)
        for family in ("eager-bf16", "openvino-bf16"):  # not equal: shown for bf16 CPUs
            m = best(family, equal=False)
            if m is not None:
                series.append(m.path)
        eager_best = best("eager", lambda p: p.workers == 1)
        if "compile" not in skip and eager_best is not None:
            cp = eager_best.path
            compiled = compile_path(s, cp.threads, cp.batch_size, "channels-last" in cp.name)
            if compiled is not None:
                print(f"torch.compile: {compiled.setup_s:.1f} s to compile (first call)")
                series.append(compiled)
        fastest = [winners[f] for f in ("onnxruntime", "openvino") if f in winners]
        if fastest:
            top = min(fastest, key=lambda m: min(m.forward_s)).path
            series.append(replace(top, name=top.name + " (whole)", crop="whole"))
            series.append(replace(top, name=top.name + " (lung box)", crop="lung"))
        series_m = [ref_m] + [Measurement(p) for p in series[1:]]
        today_settings: dict[str, str] = {}
        print(f"\nseries table: {len(series)} paths x {args.repeats} rounds on {n_z} slices")
        for round_i in range(args.repeats):
            for m in series_m:
                if m.path.family == "today":
                    fwd, loop, cpu, how = run_today(m.path, ct, model, work)
                    today_settings[m.path.name] = how
                else:
                    fwd, loop, cpu = run_slices(m.path, hu, all_z, boxes, work, context)
                m.add(fwd, loop, cpu)
                print(f"    {m.path.name}: {fwd:.1f} s, load {m.loads[-1]:.1f}", flush=True)
                if round_i == 0 and m is not ref_m:
                    m.max_abs_dp, m.flips = compare(work, ref_prob)
            print(f"  round {round_i + 1} done, load {load_1min():.2f}", flush=True)
        ref_m.add(*run_slices(reference, hu, all_z, boxes, work, context))

    # ---------------- report ----------------
    ref_s = statistics.median(ref_m.forward_s)
    print()
    print(cpu_description())
    print(
        f"series {hu.shape} (z, y, x); seconds = model passes over all {n_z} slices "
        "(median and min of the rounds); loop = median with inputs made and outputs stored; "
        "cpu = median CPU seconds of the process over the model passes (all threads, spin-waits "
        "included: for 1-thread paths about what an idle core needs, whatever the load); "
        f"setup = once per process (export / compile / session); equal = max|dp| <= "
        f"{TOL_MAX_ABS_DP:g} and flips <= {TOL_MAX_FLIPS} (of {n_mask} reference mask voxels)"
    )
    spread = (max(ref_m.forward_s) - min(ref_m.forward_s)) / min(ref_m.forward_s)
    print(
        f"noise: reference runs {', '.join(f'{v:.1f}' for v in ref_m.forward_s)} s "
        f"(start, rounds, end; spread {spread:.0%}); load averages "
        f"{min(ref_m.loads):.2f}..{max(ref_m.loads):.2f} over the run"
    )
    print("\nSERIES TABLE (all slices)")
    print(HEADER)
    for m in series_m:
        print(fmt_row(m, ref_s, est=False))
    for name, how in today_settings.items():
        print(f"  {name}: last run chose {how}")
    print(f"\nSWEEP ({slab_n} slices, seconds scaled x{scale:.2f} to the series)")
    print(HEADER)
    for m in sweep_m:
        print(fmt_row(m, ref_s, est=True))
    if s.skipped:
        print("\nskipped: " + "; ".join(s.skipped))
    if s.failures:
        print("failed: " + "; ".join(s.failures))
    if args.json:
        rows = []
        for table, ms in (("series", series_m), ("sweep", sweep_m)):
            for m in ms:
                rows.append(
                    {
                        "table": table,
                        "name": m.path.name,
                        "family": m.path.family,
                        "note": m.path.note,
                        "crop": m.path.crop,
                        "forward_s": m.forward_s,
                        "loop_s": m.loop_s,
                        "cpu_s": m.cpu_s,
                        "loads": m.loads,
                        "setup_s": m.path.setup_s,
                        "max_abs_dp": m.max_abs_dp,
                        "flips": m.flips,
                        "equal": m.equal,
                    }
                )
        args.json.write_text(
            json.dumps(
                {
                    "cpu": cpu_description(),
                    "shape": list(hu.shape),
                    "mask_voxels": n_mask,
                    "fp16_storage": [dp16, flips16],
                    "today_settings": today_settings,
                    "skipped": s.skipped,
                    "failed": s.failures,
                    "rows": rows,
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()

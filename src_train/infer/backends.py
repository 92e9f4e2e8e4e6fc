"""The model's forward pass as an exported graph run by a mature CPU runtime (fp32 CPUs).

On CPUs without native bf16 the model runs in fp32. This module exports the model (batch
norms folded, the input batch norm and the sigmoid inside the graph) once per caller to ONNX
and runs it with OpenVINO's CPU plugin (fp32 pinned, latency hint, the tuner's thread count),
the fastest fp32 path measured on an AVX2 CPU among eager PyTorch, TorchScript,
``torch.compile``, ONNX Runtime and OpenVINO (about 15 % less time than eager PyTorch, close
to the noise of the shared machine it was measured on; ONNX Runtime tied with eager and was
not kept; figures in ``docs/scale.md``). It is one more option the runner's tuner measures
against eager PyTorch on the first batches of a series (:mod:`.tuner`): the faster one is
kept, so on a CPU where the runtime is not faster nothing changes. Outputs equal eager fp32
within float rounding (:data:`EQUAL_TOLERANCE`, far below the uint8 steps the probabilities
are stored with).

The runtime is an optional package (``pip install napari-lunaseg[cpu]``); when it is
missing, or the export fails, eager PyTorch runs and the reason is logged once. The exported
graphs and the runtime sessions live in an :class:`EngineCache` that the caller owns (it
travels in its :class:`~src_train.infer.tuner.TunerCache`), so a run over many series exports
once.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import io
import logging
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from src_train.errors import ConfigError

log = logging.getLogger(__name__)

#: ``--engine`` choices: ``auto`` lets the tuner pick among PyTorch and the installed runtimes;
#: ``torch`` keeps eager PyTorch; a runtime name asks for that runtime (error if missing).
ENGINE_CHOICES = ("auto", "torch", "openvino")

#: Runtimes ``auto`` offers to the tuner, and the packages each needs (import names: the
#: runtime, and ``onnx`` for PyTorch's exporter).
RUNTIMES: dict[str, tuple[str, ...]] = {"openvino": ("openvino", "onnx")}

#: How ``pip`` installs them.
INSTALL_HINT = "pip install 'napari-lunaseg[cpu]'"

#: Largest |p - p_eager| an engine's probabilities may differ by (measured: about 1e-7).
EQUAL_TOLERANCE = 1e-4

#: ONNX operator set of the exported graph.
ONNX_OPSET = 17


def is_installed(runtime: str) -> bool:
    """Whether every package ``runtime`` needs can be imported."""
    return all(importlib.util.find_spec(name) is not None for name in RUNTIMES[runtime])


def _exportable(module: nn.Module) -> bool:
    return hasattr(module, "_forward_padded") and hasattr(module, "input_norm")


def candidate_engines(
    requested: str,
    device: torch.device,
    precision: str,
    module: nn.Module,
    format_pinned: bool = False,
) -> list[str]:
    """Runtimes the tuner may try for this run (empty: eager PyTorch only).

    Only for fp32 on the CPU (bf16 autocast and CUDA stay with PyTorch) and LunaSeg models;
    ``auto`` offers none when the caller pinned PyTorch's memory format (``format_pinned``).
    ``requested`` is ``auto``, ``torch`` or a runtime; a runtime asked for by name that is not
    installed is a :class:`ConfigError` naming the package.
    """
    if requested not in ENGINE_CHOICES:
        raise ConfigError(
            f"Unknown engine {requested!r}; choose one of {', '.join(ENGINE_CHOICES)}."
        )
    if requested == "torch" or (requested == "auto" and format_pinned):
        return []
    if device.type != "cpu" or precision != "fp32":
        return []
    if not _exportable(module):
        return []
    names = list(RUNTIMES) if requested == "auto" else [requested]
    missing = [n for n in names if not is_installed(n)]
    if requested != "auto" and missing:
        raise ConfigError(
            f"--engine {requested} needs the packages {', '.join(RUNTIMES[requested])}: "
            f"{INSTALL_HINT}, or use --engine auto."
        )
    return [n for n in names if n not in missing]


def execution_options(
    formats: Sequence[bool | str], engines: Sequence[str], requested: str
) -> list[bool | str]:
    """What the tuner chooses among: PyTorch's memory formats, plus (``auto``) or instead of
    them (a runtime asked for by name) the usable runtimes. A runtime asked for that could
    not take the model (export failed, logged) leaves PyTorch."""
    if requested == "auto" or not engines:
        return [*formats, *engines]
    return list(engines)


class ProbabilityGraph(nn.Module):
    """What is exported: input batch norm, the network on inputs already padded to its size
    multiple, and the sigmoid. Input ``(N, C, H, W)`` clamped HU; output ``(N, H, W)``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        model: Any = self.model  # a LunaSeg model (see _exportable)
        logits = model._forward_padded(model.input_norm(x))
        return torch.sigmoid(logits[:, 0])


def export_onnx(module: nn.Module, example: torch.Tensor) -> bytes:
    """The model as an ONNX graph (bytes) with batch, height and width left free."""
    graph = ProbabilityGraph(module).eval()
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")  # the TorchScript-based exporter announces its future
        torch.onnx.export(
            graph,
            (example,),
            buffer,  # type: ignore[arg-type]  # a file object works as well as a path
            input_names=["x"],
            output_names=["p"],
            dynamic_axes={"x": {0: "n", 2: "h", 3: "w"}, "p": {0: "n", 1: "h", 2: "w"}},
            opset_version=ONNX_OPSET,
            dynamo=False,
        )
    return buffer.getvalue()


def _weights_key(module: nn.Module) -> str:
    """A hash of the module's type and weights: one export per distinct model."""
    digest = hashlib.sha1(type(module).__name__.encode())
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def pad_to_multiple(batch: np.ndarray, multiple: int) -> np.ndarray:
    """Pad ``(N, C, H, W)`` at the bottom and right to a multiple, repeating the edge (as the
    model's own forward pads)."""
    pad_h, pad_w = -batch.shape[2] % multiple, -batch.shape[3] % multiple
    if not pad_h and not pad_w:
        return batch
    return np.pad(batch, ((0, 0), (0, 0), (0, pad_h), (0, pad_w)), mode="edge")


class Engines:
    """The runtimes usable for one model, bound to its graph in an :class:`EngineCache`."""

    def __init__(self, cache: EngineCache, key: str, names: Sequence[str], multiple: int) -> None:
        self._cache = cache
        self._key = key
        self.names = list(names)
        self.multiple = multiple

    def run(self, runtime: str, batch: torch.Tensor, threads: int) -> np.ndarray:
        """Probabilities float16 ``(N, H, W)`` of a batch ``(N, C, H, W)`` run by ``runtime``."""
        session = self._cache.session(runtime, self._key, threads)
        x = batch.numpy()
        height, width = x.shape[2:]
        probs = session(pad_to_multiple(x, self.multiple))[0]
        return np.asarray(probs)[:, :height, :width].astype(np.float16)


#: Distinct model weights an :class:`EngineCache` keeps exported: a trainer validates new
#: weights every few epochs, and older graphs and sessions would only hold memory.
ENGINE_CACHE_MODELS = 2


class EngineCache:
    """Exported graphs and runtime sessions of one caller, by model weights and threads (the
    :data:`ENGINE_CACHE_MODELS` most recently exported weights)."""

    def __init__(self) -> None:
        self._graphs: dict[str, bytes | None] = {}
        self._sessions: dict[tuple[str, str, int], Any] = {}

    def prepare(self, runtimes: Sequence[str], module: nn.Module, multiple: int) -> Engines:
        """Export ``module`` (once per distinct weights) for ``runtimes``; an export failure is
        logged once and leaves eager PyTorch (no runtime usable)."""
        key = _weights_key(module)
        if runtimes and key not in self._graphs:
            self._forget_oldest(ENGINE_CACHE_MODELS - 1)
            channels = int(getattr(getattr(module, "config", None), "in_channels", 1))
            example = torch.zeros(1, channels, 2 * multiple, 2 * multiple)
            try:
                self._graphs[key] = export_onnx(module, example)
            except Exception as exc:  # any exporter failure means: stay with eager PyTorch
                log.warning("the model could not be exported to ONNX (%s); running PyTorch", exc)
                self._graphs[key] = None
        usable = runtimes if self._graphs.get(key) is not None else []
        return Engines(self, key, usable, multiple)

    def _forget_oldest(self, keep: int) -> None:
        """Drop the graphs (and their sessions) of all but the ``keep`` newest weights."""
        for old in list(self._graphs)[: max(len(self._graphs) - keep, 0)]:
            del self._graphs[old]
            for session_key in [k for k in self._sessions if k[1] == old]:
                del self._sessions[session_key]

    def session(self, runtime: str, key: str, threads: int) -> Any:
        """The runtime's session for a graph and a thread count (made on first use)."""
        session = self._sessions.get((runtime, key, threads))
        if session is None:
            graph = self._graphs.get(key)
            if graph is None:
                raise RuntimeError(f"no exported graph to run with {runtime}")
            session = self._sessions[(runtime, key, threads)] = _compile_openvino(graph, threads)
        return session


@functools.cache
def _openvino_core() -> Any:
    """The process's one OpenVINO ``Core`` (a Core per compiled model crashed the process at
    exit once a few dozen had been made, as a trainer validating every few epochs makes)."""
    import openvino as ov

    return ov.Core()


def _compile_openvino(graph: bytes, threads: int) -> Any:
    """The ONNX graph compiled by OpenVINO for the CPU: fp32 (never its bf16 default on CPUs
    that have bf16), a latency hint, ``threads`` inference threads. Called with a batch."""
    core = _openvino_core()
    config = {
        "INFERENCE_NUM_THREADS": threads,
        "INFERENCE_PRECISION_HINT": "f32",
        "PERFORMANCE_HINT": "LATENCY",
    }
    return core.compile_model(core.read_model(graph), "CPU", config)

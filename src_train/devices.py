"""Which device and number format work runs on: ``auto`` devices and native bf16 detection."""

from __future__ import annotations

import os

import torch

from src_train.errors import ConfigError


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; anything else is checked and returned.

    Asking for CUDA on a machine without it is a :class:`ConfigError` naming the fix.
    """
    if isinstance(device, torch.device):
        return device
    name = device.strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"Unknown device {device!r}; use auto, cpu or cuda[:N].") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"Device {device!r} was asked for but CUDA is not available here; "
            "use --device cpu or auto."
        )
    return resolved


def cpu_has_native_bf16() -> bool:
    """True when oneDNN reports native bf16 support (AVX512-BF16 / AMX) on this CPU.

    Only there is bf16 autocast faster than fp32 on a CPU; elsewhere it is emulated and slower.
    """
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def onednn_isa_cap() -> str:
    """oneDNN's instruction-set cap: ``ONEDNN_MAX_CPU_ISA``, else ``DNNL_MAX_CPU_ISA``; "" unset."""
    return (
        os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or ""
    ).strip()


def cpu_has_amx() -> bool:
    """True when the CPU has AMX tiles and oneDNN may use them (False where torch cannot tell).

    oneDNN's ``ONEDNN_MAX_CPU_ISA`` (or ``DNNL_MAX_CPU_ISA``) set to an instruction set below
    AMX (``AVX512_CORE_BF16``, say) keeps oneDNN off the tiles: that counts as no AMX. It is also
    how a CPU without AMX is imitated on one with it (``benchmarks/infer_precision.py``).
    """
    cap = onednn_isa_cap().upper()
    if cap and cap != "ALL" and "AMX" not in cap:
        return False
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)
    if probe is None:
        return False
    try:
        return bool(probe())
    except (AttributeError, RuntimeError):
        return False


def cpu_bf16_pays() -> bool:
    """True when bf16 autocast is the faster choice on this CPU: native bf16 **and** AMX.

    Measured with the default U-Net: on a Xeon with AMX, training steps ran ~2x and whole-series
    inference 1.8x faster in bf16 than in fp32; on a Xeon with AVX-512 bf16 but no AMX, training
    ran 0.84x (131 against 155 samples/s, ``benchmarks/train_throughput.py``) and, with AMX
    turned off by ``ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16``, inference 0.75x
    (``benchmarks/infer_precision.py``). ``auto`` precision in training and inference follows it.
    """
    return cpu_has_native_bf16() and cpu_has_amx()

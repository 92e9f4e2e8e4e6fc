"""Segmentation models (2-D U-Net, SegNet) and checkpoint I/O.

Every model maps a batch ``(N, C, H, W)`` -- for CT, ``C`` = the slice and its neighbours, HU
clamped (see :mod:`src_train.context`); for 2-D image sets, RGB -- to logits ``(N, 1, H, W)``.
The sigmoid of a logit is the probability that the voxel is nodule (lesion); it is applied by
the loss, the metrics and inference, never inside the model. A batch norm on the input replaces
manual normalisation.

Any ``H, W`` is accepted: the input is padded (edge values repeated) up to a multiple of
:attr:`ModelConfig.size_multiple` and the logits are cropped back to ``H, W``.

Checkpoints are ``torch.save`` files holding plain dicts, tensors, numbers and strings (they
load with ``weights_only=True``, on a CPU-only machine too). They are written to a temporary
file and renamed into place, so a crash never leaves a half-written checkpoint.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import os
import sys
import time
import warnings
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from src_train.atomic import atomic_write
from src_train.context import DEFAULT_CONTEXT_SLICES
from src_train.devices import resolve_device
from src_train.errors import CheckpointError, ConfigError

log = logging.getLogger(__name__)

#: Architectures :func:`build_model` knows.
ARCHITECTURES = ("unet", "segnet")

#: How a U-Net decoder doubles the resolution: a learned 2x2 transposed convolution (the
#: SPEC's), or fixed bilinear interpolation followed by a learned 1x1 convolution.
UPSAMPLING = ("transpose", "bilinear")

#: Tag and version written into every checkpoint; anything without the tag is refused.
CHECKPOINT_FORMAT = "lunaseg-checkpoint"
CHECKPOINT_VERSION = 1

_SHA1_CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class ModelConfig:
    """Hyper-parameters that define a model's shape (saved in every checkpoint).

    Attributes:
        arch: ``"unet"`` (the SPEC's model) or ``"segnet"``.
        in_channels: input channels: slices of CT context (``2 * context + 1``, see
            :attr:`context_slices`), or 3 for RGB images.
        depth: resolution levels; the image is halved ``depth - 1`` times.
        filters: convolution filters at the top level, doubling per level down.
        batch_norm: batch norm after every convolution.
        input_norm: a batch norm on the input (so no manual HU normalisation is needed).
        up: U-Net upsampling, one of :data:`UPSAMPLING` (SegNet max-unpools whatever this
            says). Checkpoints written before this option existed lack the key and load as
            ``"transpose"``, the only upsampling there was.
        context_mm: a CT model's neighbours are taken every this many millimetres along the
            slice axis, resampled between slices (:mod:`src_train.context`), so its input
            spans the same distance at any slice thickness; None (checkpoints written before
            this option, and the default) takes the next slices themselves. It is what the
            model's input expects, so it travels with the weights.
    """

    arch: str = "unet"
    in_channels: int = 2 * DEFAULT_CONTEXT_SLICES + 1
    depth: int = 3
    filters: int = 16
    batch_norm: bool = True
    input_norm: bool = True
    up: str = "transpose"
    context_mm: float | None = None

    def __post_init__(self) -> None:
        if self.arch not in ARCHITECTURES:
            raise ConfigError(
                f"Unknown model architecture {self.arch!r}; "
                f"choose one of {', '.join(ARCHITECTURES)}."
            )
        if self.up not in UPSAMPLING:
            raise ConfigError(
                f"Unknown upsampling {self.up!r}; choose one of {', '.join(UPSAMPLING)}."
            )
        if self.arch == "segnet" and self.up != "transpose":
            raise ConfigError(
                f"Upsampling {self.up!r} is a U-Net option; SegNet upsamples by max-unpooling. "
                "Leave up at 'transpose' (its default) for SegNet."
            )
        if self.context_mm is not None and not (
            math.isfinite(self.context_mm) and self.context_mm > 0
        ):
            raise ConfigError(
                f"context_mm must be a positive distance in mm; got {self.context_mm!r}."
            )
        for name in ("in_channels", "depth", "filters"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"Model option {name} must be a positive integer; got {value!r}.")

    @property
    def context_slices(self) -> int:
        """Neighbouring slices on each side of the center slice, for a CT model.

        A CT model sees a slice with as many neighbours above as below, so its input channels
        are odd (``2 * context + 1``); the model itself takes any number of channels (3 for RGB
        images). Asking a model of an even channel count for its CT context raises
        :class:`ConfigError`.
        """
        if self.in_channels % 2 == 0:
            raise ConfigError(
                f"This model takes {self.in_channels} input channels, not a CT context (the "
                "slice and as many neighbours above as below: 2 * context_slices + 1, an odd "
                "number). Use a checkpoint trained on CT with 'lunaseg train'."
            )
        return (self.in_channels - 1) // 2

    @property
    def size_multiple(self) -> int:
        """``H`` and ``W`` are padded internally to a multiple of this (``2**(depth-1)``)."""
        return 2 ** (self.depth - 1)

    def level_filters(self) -> list[int]:
        """Filters per level, top to bottom."""
        return [self.filters * 2**level for level in range(self.depth)]

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`ConfigError`."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"Unknown model option(s) {unknown}; known: {sorted(names)}.")
        return cls(**dict(data))


# ---------------------------------------------------------------------------------------------
# building blocks
# ---------------------------------------------------------------------------------------------
def _conv_block(in_ch: int, out_ch: int, batch_norm: bool, n_convs: int = 2) -> nn.Sequential:
    """``n_convs`` x (padded 3x3 convolution, optional batch norm, ReLU); keeps ``H, W``."""
    layers: list[nn.Module] = []
    for i in range(n_convs):
        layers.append(
            nn.Conv2d(in_ch if i == 0 else out_ch, out_ch, 3, padding=1, bias=not batch_norm)
        )
        if batch_norm:
            layers.append(nn.BatchNorm2d(out_ch))
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def _encoder(config: ModelConfig) -> nn.ModuleList:
    """One conv block per level, top to bottom; level ``i`` has ``filters * 2**i`` channels."""
    blocks = nn.ModuleList()
    in_ch = config.in_channels
    for width in config.level_filters():
        blocks.append(_conv_block(in_ch, width, config.batch_norm))
        in_ch = width
    return blocks


class _PaddedModel(nn.Module):
    """Base: input batch norm, pad ``H, W`` to a size multiple, crop the logits back."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.input_norm: nn.Module = (
            nn.BatchNorm2d(config.in_channels) if config.input_norm else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, 1, H, W)`` for inputs ``(N, in_channels, H, W)`` in clamped HU."""
        if x.ndim != 4 or x.shape[1] != self.config.in_channels:
            raise ConfigError(
                f"The model expects input (N, {self.config.in_channels}, H, W); got "
                f"{tuple(x.shape)}."
            )
        height, width = x.shape[-2:]
        multiple = self.config.size_multiple
        pad_h = (-height) % multiple
        pad_w = (-width) % multiple
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        logits = self._forward_padded(self.input_norm(x))
        return logits[..., :height, :width]

    def _forward_padded(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


def _upsampler(in_ch: int, out_ch: int, up: str) -> nn.Module:
    """Double ``H, W`` and map ``in_ch`` to ``out_ch`` channels (see :data:`UPSAMPLING`)."""
    if up == "transpose":
        return nn.ConvTranspose2d(in_ch, out_ch, kernel_size=2, stride=2)
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
        nn.Conv2d(in_ch, out_ch, kernel_size=1),
    )


class UNet(_PaddedModel):
    """2-D U-Net: padded 3x3 convolutions, batch norm, max-pool down, upsampling, skips.

    Levels have ``filters * 2**level`` channels; the bottom level is reached after
    ``depth - 1`` halvings. The decoder upsamples by a transposed convolution or by bilinear
    interpolation + 1x1 convolution (``config.up``). A 1x1 convolution maps the top level to
    one logit channel.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        widths = config.level_filters()
        self.down = _encoder(config)
        in_ch = widths[-1]
        self.up = nn.ModuleList()
        self.up_blocks = nn.ModuleList()
        for width in reversed(widths[:-1]):
            self.up.append(_upsampler(in_ch, width, config.up))
            self.up_blocks.append(_conv_block(2 * width, width, config.batch_norm))
            in_ch = width
        self.head = nn.Conv2d(in_ch, 1, kernel_size=1)

    def _forward_padded(self, x: torch.Tensor) -> torch.Tensor:
        skips: list[torch.Tensor] = []
        for i, block in enumerate(self.down):
            if i:
                x = F.max_pool2d(x, 2)
            x = block(x)
            skips.append(x)
        skips.pop()  # the bottom level feeds the decoder directly
        for up, block in zip(self.up, self.up_blocks, strict=True):
            x = block(torch.cat([up(x), skips.pop()], dim=1))
        return self.head(x)


class SegNet(_PaddedModel):
    """SegNet: encoder max-pools keep their indices, the decoder max-unpools with them.

    Same levels and filters as :class:`UNet`, no skip concatenation: spatial detail comes back
    through the pooling indices only. Each decoder block brings the channels back to the width
    of the level it unpools into, so the indices and the tensor match.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        widths = config.level_filters()
        self.encoder = _encoder(config)
        in_ch = widths[-1]
        self.decoder = nn.ModuleList()
        for width in reversed(widths[:-1]):
            self.decoder.append(_conv_block(in_ch, width, config.batch_norm))
            in_ch = width
        self.top = _conv_block(in_ch, widths[0], config.batch_norm)
        self.head = nn.Conv2d(widths[0], 1, kernel_size=1)

    def _forward_padded(self, x: torch.Tensor) -> torch.Tensor:
        pooled: list[tuple[torch.Tensor, torch.Size]] = []
        for i, block in enumerate(self.encoder):
            if i:
                size = x.shape
                x, indices = F.max_pool2d(x, 2, return_indices=True)
                pooled.append((indices, size))
            x = block(x)
        for block in self.decoder:
            indices, size = pooled.pop()
            x = F.max_unpool2d(block(x), indices, (2, 2), output_size=size[-2:])
        return self.head(self.top(x))


def build_model(config: ModelConfig | None = None) -> nn.Module:
    """A fresh model for ``config`` (default: the SPEC's U-Net). Returns logits ``(N,1,H,W)``."""
    cfg = config or ModelConfig()
    if cfg.arch == "unet":
        return UNet(cfg)
    return SegNet(cfg)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain model inside DistributedDataParallel / DataParallel / ``torch.compile``."""
    inner = model
    while True:
        if isinstance(inner, nn.parallel.DistributedDataParallel | nn.DataParallel):
            inner = cast(nn.Module, inner.module)
        elif isinstance(getattr(inner, "_orig_mod", None), nn.Module):
            inner = cast(nn.Module, inner._orig_mod)
        else:
            return inner


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# ---------------------------------------------------------------------------------------------
# checkpoints
# ---------------------------------------------------------------------------------------------
@dataclass
class Checkpoint:
    """A loaded checkpoint.

    Attributes:
        model_config: the model's hyper-parameters.
        model_state: ``state_dict`` of the model (CPU tensors unless ``map_location`` said else).
        optimizer_state: ``state_dict`` of the optimiser, or None.
        epoch: last completed epoch (1-based; 0 = before training).
        samples_seen: training samples seen so far.
        train_config: the training configuration as a plain dict.
        created: UTC time of writing, ISO 8601.
        command_line: the command line of the process that wrote it.
        sha1: SHA-1 of the file's bytes.
        path: the file it was read from.
        metrics: metrics at the time of writing (e.g. validation recall), may be empty.
        extra: anything else the writer stored (e.g. the best metric so far).
    """

    model_config: ModelConfig
    model_state: dict[str, torch.Tensor]
    optimizer_state: dict[str, Any] | None
    epoch: int
    samples_seen: int
    train_config: dict[str, Any]
    created: str
    command_line: list[str]
    sha1: str
    path: Path | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


def file_sha1(path: str | os.PathLike[str]) -> str:
    """Hex SHA-1 of a file's bytes (read in chunks)."""
    digest = hashlib.sha1()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_SHA1_CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _cpu_state(state: Any) -> Any:
    """Copy of a (nested) state dict with every tensor moved to the CPU."""
    if isinstance(state, torch.Tensor):
        return state.detach().cpu()
    if isinstance(state, dict):
        return {k: _cpu_state(v) for k, v in state.items()}
    if isinstance(state, list | tuple):
        return type(state)(_cpu_state(v) for v in state)
    return state


def save_checkpoint(
    path: str | os.PathLike[str],
    model: nn.Module,
    model_config: ModelConfig,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    epoch: int = 0,
    samples_seen: int = 0,
    train_config: Mapping[str, Any] | None = None,
    command_line: Sequence[str] | None = None,
    metrics: Mapping[str, float] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> str:
    """Write a checkpoint atomically (temporary file + rename) and return its SHA-1.

    ``model`` may be wrapped (DDP, ``torch.compile``); the plain model's state is saved, on the
    CPU, so that the file loads on any machine.
    """
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    payload: dict[str, Any] = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_VERSION,
        "model_config": model_config.to_dict(),
        "model_state": _cpu_state(unwrap_model(model).state_dict()),
        "optimizer_state": _cpu_state(optimizer.state_dict()) if optimizer is not None else None,
        "epoch": int(epoch),
        "samples_seen": int(samples_seen),
        "train_config": dict(train_config or {}),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command_line": list(command_line if command_line is not None else sys.argv),
        "metrics": {k: float(v) for k, v in (metrics or {}).items()},
        "extra": dict(extra or {}),
    }
    with atomic_write(dest, "wb") as fh:
        torch.save(payload, fh)
    sha1 = file_sha1(dest)
    log.info("checkpoint %s written (epoch %d, sha1 %s)", dest, epoch, sha1)
    return sha1


def _advice(advice: str | None, default: str) -> str:
    """The closing suggestion of an error message: the caller's ``advice``, else ``default``."""
    return default if advice is None else advice


def _check_state_fits(
    path: Path, config: ModelConfig, state: Mapping[str, Any], advice: str | None = None
) -> None:
    """Raise :class:`CheckpointError` unless ``state`` has exactly the keys/shapes of ``config``
    (``advice`` replaces the message's closing suggestion)."""
    with torch.device("meta"):
        reference = build_model(config).state_dict()
    missing = sorted(set(reference) - set(state))
    unexpected = sorted(set(state) - set(reference))
    wrong = sorted(
        k
        for k in set(reference) & set(state)
        if not isinstance(state[k], torch.Tensor) or tuple(state[k].shape) != reference[k].shape
    )
    if missing or unexpected or wrong:
        detail = "; ".join(
            f"{label}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape", wrong))
            if keys
        )
        raise CheckpointError(
            f"{path}: its weights do not fit the model it declares ({config}): {detail}. "
            "The file was made by another model or version. "
            + _advice(advice, "Train a new checkpoint.")
        )


#: The first bytes of a zip archive, which ``torch.save`` writes.
_ZIP_SIGNATURE = b"PK\x03\x04"


def _unreadable_checkpoint(src: Path, advice: str | None) -> str:
    """The message for a file ``torch.load`` refused: what the file is, judged from the file.

    A LunaSeg checkpoint is a zip archive (``torch.save``) of plain data and tensors, so: empty,
    not a zip, a zip cut short, a zip pickling Python objects, or a zip whose contents are bad.
    """
    use_ours = "Use a file written by 'lunaseg train'."
    size = src.stat().st_size
    with src.open("rb") as fh:
        head = fh.read(len(_ZIP_SIGNATURE))
    if size == 0:
        what = "is empty (0 bytes): its saving or copying was interrupted"
        fix = "Copy it again or use a file written by 'lunaseg train'."
    elif head != _ZIP_SIGNATURE:
        what = (
            "is not a LunaSeg checkpoint: LunaSeg checkpoints are PyTorch zip archives and this "
            f"file ({size:,} bytes) is not one (another kind of file, or damaged from its start)"
        )
        fix = use_ours
    elif not zipfile.is_zipfile(src):
        what = (
            f"is damaged or truncated: it begins like a checkpoint but its {size:,} bytes end "
            "before the archive's index (an interrupted copy, download or save)"
        )
        fix = "Copy it again or use a file written by 'lunaseg train'."
    else:
        try:
            objects = torch.serialization.get_unsafe_globals_in_checkpoint(src)
        except Exception:  # a zip without PyTorch's records, or damaged ones
            objects = []
        if objects:
            shown = ", ".join(objects[:3]) + (" ..." if len(objects) > 3 else "")
            what = (
                f"is not a LunaSeg checkpoint: it stores Python objects ({shown}), e.g. a whole "
                "model saved with torch.save(model); LunaSeg never loads those, because loading "
                "them can run code hidden in the file"
            )
        else:
            what = (
                "is not a LunaSeg checkpoint, or is a damaged one: it is a zip archive whose "
                "contents PyTorch cannot read"
            )
        fix = use_ours
    return f"Checkpoint {src} {what}. " + _advice(advice, fix)


def load_checkpoint(
    path: str | os.PathLike[str],
    map_location: str | torch.device = "cpu",
    *,
    expected: ModelConfig | None = None,
    advice: str | None = None,
) -> Checkpoint:
    """Read and check a checkpoint.

    Raises :class:`CheckpointError` naming the file when it is missing, not a LunaSeg checkpoint,
    truncated/corrupt, its weights do not match its model configuration, or (with ``expected``)
    it holds another model than the one expected. ``advice`` replaces the closing suggestion of
    those messages (e.g. "train a new one") with what the caller knows better.
    """
    src = Path(path)
    if src.is_dir():
        found = sorted(p.name for p in src.glob("*.pt"))
        inside = f" (it holds {', '.join(found)})" if found else " (it holds no .pt file)"
        raise CheckpointError(
            f"{src} is a folder, not a checkpoint file{inside}; name the file, e.g. "
            f"{src / (found[0] if found else 'checkpoint_best.pt')}."
        )
    if not src.is_file():
        raise CheckpointError(
            f"Checkpoint {src} does not exist. " + _advice(advice, "Check the path or train one.")
        )
    try:
        with warnings.catch_warnings():
            # torch warns about foreign pickle protocols before failing; the error below says it.
            warnings.simplefilter("ignore", UserWarning)
            raw = torch.load(src, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for truncated/foreign files
        # torch's own text advises weights_only=False (unsafe here) and runs long: it goes to the
        # debug log only, and the user reads what the file itself shows.
        log.debug("torch.load(%s) failed: %s: %s", src, type(exc).__name__, exc)
        raise CheckpointError(_unreadable_checkpoint(src, advice)) from exc
    if not isinstance(raw, dict) or raw.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{src} is not a LunaSeg checkpoint (no '{CHECKPOINT_FORMAT}' tag). "
            + _advice(advice, "Use a file written by 'lunaseg train'.")
        )
    version = raw.get("format_version")
    if version != CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{src} has checkpoint format version {version}; this LunaSeg reads version "
            f"{CHECKPOINT_VERSION}. "
            + _advice(advice, "Use a matching LunaSeg release or retrain.")
        )
    try:
        config = ModelConfig.from_dict(raw["model_config"])
        ckpt = Checkpoint(
            model_config=config,
            model_state=dict(raw["model_state"]),
            optimizer_state=raw.get("optimizer_state"),
            epoch=int(raw["epoch"]),
            samples_seen=int(raw["samples_seen"]),
            train_config=dict(raw.get("train_config") or {}),
            created=str(raw.get("created", "")),
            command_line=list(raw.get("command_line") or []),
            sha1=file_sha1(src),
            path=src,
            metrics=dict(raw.get("metrics") or {}),
            extra=dict(raw.get("extra") or {}),
        )
    except (KeyError, TypeError, ValueError, ConfigError) as exc:
        raise CheckpointError(
            f"{src} is a damaged LunaSeg checkpoint ({type(exc).__name__}: {exc}). "
            + _advice(advice, "Train a new one.")
        ) from exc
    _check_state_fits(src, config, ckpt.model_state, advice)
    if expected is not None and config != expected:
        raise CheckpointError(
            f"{src} holds a model {config}, not the expected {expected}. Pick a checkpoint of "
            "that model or change the model options."
        )
    return ckpt


def load_model(
    path: str | os.PathLike[str], device: str | torch.device = "cpu"
) -> tuple[nn.Module, ModelConfig]:
    """Build the model a checkpoint describes, load its weights, put it on ``device``, eval mode.

    ``device`` may be ``"auto"``. Checkpoints written on a GPU load on a CPU-only machine.
    Raises :class:`CheckpointError` as :func:`load_checkpoint` does.
    """
    ckpt = load_checkpoint(path, map_location="cpu")
    model = model_of_checkpoint(ckpt, device)
    log.info(
        "loaded %s (%s, epoch %d, sha1 %s)", path, ckpt.model_config.arch, ckpt.epoch, ckpt.sha1
    )
    return model, ckpt.model_config


def model_of_checkpoint(ckpt: Checkpoint, device: str | torch.device = "cpu") -> nn.Module:
    """The model ``ckpt`` describes with its weights, on ``device`` (``"auto"`` allowed), in
    eval mode; :class:`CheckpointError` naming the file when the weights do not fit."""
    model = build_model(ckpt.model_config)
    try:
        model.load_state_dict(ckpt.model_state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{ckpt.path}: weights do not load into the model: {exc}") from exc
    return model.to(resolve_device(device)).eval()

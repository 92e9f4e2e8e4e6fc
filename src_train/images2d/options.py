"""The options of a model x loss comparison, and the runs they mean.

:class:`CompareOptions` is the one source of the comparison's options: each field's
``metadata["help"]`` is its help line, so ``lunaseg compare`` can be generated from the
dataclass. :meth:`CompareOptions.plan` expands the options into :class:`RunPlan` items (model
x loss x seed); a model is named ``ARCH[-UP][:FILTERS]`` (:class:`ModelSpec`): ``unet``,
``segnet``, ``unet-bilinear``, ``unet:8``, ``unet-bilinear:32``, the default upsampling and
filters coming from the options.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from src_train.errors import ConfigError
from src_train.images2d.conclusion import RANK_METRICS
from src_train.images2d.dataset import DEFAULT_SIZE, SplitConfig
from src_train.images2d.trainer import ImageTrainConfig
from src_train.losses import LOSSES
from src_train.model import ARCHITECTURES, UPSAMPLING

#: Folder of the run folders, inside the comparison's output folder.
RUNS_DIR = "runs"

#: Options that must be equal to resume a comparison (they define what a run means).
SAME_ON_RESUME = (
    "data",
    "size",
    "split",
    "seed",
    "epochs",
    "batch_size",
    "lr",
    "depth",
    "filters",
    "up",
    "augment",
)


def _opt(help_text: str, **extra: Any) -> dict[str, Any]:
    """Field metadata: the help line of the option (the CLI is generated from it)."""
    return {"help": help_text, **extra}


@dataclass
class CompareOptions:
    """Options of :func:`run_comparison`; each field's ``metadata["help"]`` is its CLI help."""

    data: str = field(metadata=_opt("image folder: PH2 layout, or images and masks paired by name"))
    out: str = field(default="compare", metadata=_opt("output folder (runs, results.csv, report)"))
    models: tuple[str, ...] = field(
        default=("unet", "segnet"),
        metadata=_opt("models, ARCH[-UP][:FILTERS]: unet, segnet, unet-bilinear, unet:8 ..."),
    )
    losses: tuple[str, ...] = field(
        default=("bce", "dice", "focal"), metadata=_opt(f"losses: {', '.join(LOSSES)}")
    )
    epochs: int = field(default=120, metadata=_opt("epochs per run (the same for every run)"))
    size: int = field(default=DEFAULT_SIZE, metadata=_opt("images are resized to SIZE x SIZE"))
    split: tuple[int, int, int] = field(
        default=(100, 50, 50),
        metadata=_opt("train,val,test counts of a 200-image set, scaled to the set's size"),
    )
    seeds: int = field(default=1, metadata=_opt("seeds per combination (2 measure seed noise)"))
    seed: int = field(default=0, metadata=_opt("first seed; also the split's seed"))
    batch_size: int = field(default=8, metadata=_opt("images per batch"))
    lr: float = field(default=1e-3, metadata=_opt("Adam learning rate"))
    depth: int = field(default=5, metadata=_opt("resolution levels of every model"))
    filters: int = field(default=16, metadata=_opt("filters at the top level (default of :N)"))
    up: str = field(
        default="transpose",
        metadata=_opt("U-Net upsampling unless a model names it: transpose|bilinear"),
    )
    augment: str = field(
        default="flip,rotate,scale,jitter",
        metadata=_opt("augmentations: flip,offset,scale,rotate,noise,jitter, all or none"),
    )
    rank_by: str = field(
        default="test_iou",
        metadata=_opt(f"metric that picks the winner: {', '.join(RANK_METRICS)}"),
    )
    examples: int = field(default=3, metadata=_opt("best and worst test images shown per run"))
    device: str = field(default="auto", metadata=_opt("auto, cpu or cuda[:N]"))
    threads: int = field(default=0, metadata=_opt("CPU threads for torch (0: torch's default)"))
    resume: bool = field(default=False, metadata=_opt("continue an interrupted comparison in OUT"))
    overwrite: bool = field(default=False, metadata=_opt("start over in a used OUT"))

    def __post_init__(self) -> None:
        self.data = str(Path(self.data).expanduser().resolve())
        self.models = tuple(self.models)
        self.losses = tuple(self.losses)
        self.split = (int(self.split[0]), int(self.split[1]), int(self.split[2]))
        if not self.models or not self.losses:
            raise ConfigError("Name at least one model and one loss to compare.")
        for name in ("epochs", "size", "seeds", "batch_size", "examples"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be at least 1; got {getattr(self, name)}.")
        if self.resume and self.overwrite:
            raise ConfigError("resume and overwrite contradict each other; choose one.")
        if self.rank_by not in RANK_METRICS:
            raise ConfigError(
                f"rank_by must be one of {', '.join(RANK_METRICS)}; got {self.rank_by!r}."
            )
        for dup, what in ((self.models, "model"), (self.losses, "loss")):
            if len(set(dup)) != len(dup):
                raise ConfigError(f"A {what} is named twice in {', '.join(dup)}.")
        SplitConfig(*self.split, seed=self.seed)
        for plan in self.plan():  # checks every model and loss name now, not after training
            plan.train_config(self, Path(self.out))

    def plan(self) -> list[RunPlan]:
        """Every run, seed by seed (all combinations of the first seed come first)."""
        specs = [ModelSpec.parse(token, self.up, self.filters) for token in self.models]
        return [
            RunPlan(spec, loss, self.seed + k)
            for k in range(self.seeds)
            for spec in specs
            for loss in self.losses
        ]

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (tuples as lists)."""
        return {
            f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v
            for f in fields(self)
        }


@dataclass(frozen=True)
class ModelSpec:
    """A model of the comparison: its name as asked for and the shape it means."""

    label: str
    arch: str
    up: str
    filters: int

    @classmethod
    def parse(cls, token: str, default_up: str, default_filters: int) -> ModelSpec:
        """``ARCH[-UP][:FILTERS]`` (see the module docstring)."""
        label = token.strip().lower()
        name, _, width = label.partition(":")
        arch, _, up = name.partition("-")
        if arch not in ARCHITECTURES or (up and up not in UPSAMPLING) or (arch == "segnet" and up):
            raise ConfigError(
                f"Unknown model {token!r}; use ARCH[-UP][:FILTERS] with ARCH "
                f"{'|'.join(ARCHITECTURES)}, UP {'|'.join(UPSAMPLING)} (U-Net only), e.g. "
                "unet, segnet, unet-bilinear:8."
            )
        try:
            filters = int(width) if width else default_filters
        except ValueError:
            raise ConfigError(f"Model {token!r}: filters after ':' must be a number.") from None
        return cls(label, arch, (up or default_up) if arch == "unet" else "transpose", filters)


@dataclass(frozen=True)
class RunPlan:
    """One run of the comparison."""

    spec: ModelSpec
    loss: str
    seed: int

    @property
    def name(self) -> str:
        """Folder name: ``unet_bce_s0``, ``unet-bilinear-8_dice_s1``."""
        return f"{self.spec.label.replace(':', '-')}_{self.loss}_s{self.seed}"

    def train_config(
        self, options: CompareOptions, out: Path, **overrides: Any
    ) -> ImageTrainConfig:
        """The :class:`ImageTrainConfig` of this run."""
        return ImageTrainConfig(
            run_dir=str(out / RUNS_DIR / self.name),
            model=self.spec.arch,
            up=self.spec.up,
            depth=options.depth,
            filters=self.spec.filters,
            loss=self.loss,
            lr=options.lr,
            epochs=options.epochs,
            batch_size=options.batch_size,
            augment=options.augment,
            seed=self.seed,
            device=options.device,
            threads=options.threads,
            **overrides,
        )

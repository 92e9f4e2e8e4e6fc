"""The options of a model x loss comparison, and the runs they mean.

:class:`CompareOptions` is the one source of the comparison's options: its fields are
:func:`src_train.options.option` fields, so ``lunaseg compare`` is generated from the dataclass
(``--models unet,segnet --losses bce,dice,focal``). :meth:`CompareOptions.plan` expands the
options into :class:`RunPlan` items (model x loss x seed); a model is named
``ARCH[-UP][:FILTERS]`` (:class:`ModelSpec`): ``unet``, ``segnet``, ``unet-bilinear``,
``unet:8``, ``unet-bilinear:32``, the default upsampling and filters coming from the options.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from src_train.augment import AUGMENTATIONS, COLOR_AUGMENTATIONS
from src_train.errors import ConfigError
from src_train.images2d.conclusion import RANK_METRICS
from src_train.images2d.dataset import DEFAULT_SIZE, SplitConfig
from src_train.images2d.trainer import ImageTrainConfig
from src_train.losses import LOSSES
from src_train.model import ARCHITECTURES, UPSAMPLING
from src_train.options import option
from src_train.train.config import AMP_MODES, ON_OFF_AUTO

#: Folder of the run folders, inside the comparison's output folder.
RUNS_DIR = "runs"

#: The parts of ``CompareOptions.split``, in order.
SPLIT_PARTS = ("train", "val", "test")

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
    "epoch_samples",
)


@dataclass
class CompareOptions:
    """Options of :func:`~src_train.images2d.compare.run_comparison`; each field is also an
    option of ``lunaseg compare`` (:func:`src_train.options.add_options`)."""

    data: str = option(help="image folder (PH2 layout, or images and masks paired by name)")
    out: str = option("compare", help="output folder (runs, results.csv, report)", metavar="OUT")
    models: tuple[str, ...] = option(
        ("unet", "segnet"),
        help="models, ARCH[-UP][:FILTERS]: unet, segnet, unet-bilinear, unet:8 ...",
        metavar="MODEL",
    )
    losses: tuple[str, ...] = option(
        ("bce", "dice", "focal"), help="losses", choices=LOSSES, metavar="LOSS"
    )
    epochs: int = option(120, help="epochs per run (the same for every run)")
    size: int = option(DEFAULT_SIZE, help="images are resized to PX x PX pixels", metavar="PX")
    split: tuple[int, int, int] = option(
        (100, 50, 50),
        help="train,val,test counts of a 200-image set, scaled to the set's size",
        metavar="N",
    )
    seeds: int = option(1, help="seeds per combination (2 or more measure the seed noise)")
    seed: int = option(0, help="first seed; also the split's seed")
    batch_size: int = option(8, help="images per batch")
    lr: float = option(1e-3, help="Adam learning rate")
    depth: int = option(5, help="resolution levels of every model")
    filters: int = option(16, help="filters at the top level (the default of MODEL:N)")
    up: str = option(
        "transpose", help="U-Net upsampling unless a model names it", choices=UPSAMPLING
    )
    augment: str = option(
        "flip,rotate,scale,jitter",
        help=f"augmentations, comma list of {','.join(AUGMENTATIONS + COLOR_AUGMENTATIONS)}; "
        "all; none",
    )
    rank_by: str = option(
        "val_iou",
        help="validation metric that ranks the runs and picks the winner (the test images are "
        "reported, never used to choose)",
        choices=tuple(RANK_METRICS),
    )
    resize_masks: bool = option(
        False,
        help="resize a mask whose size differs from its image's to it (default: refuse: masks "
        "are labels; use this only when both cover the same field of view)",
    )
    examples: int = option(3, help="best and worst test images shown per run")
    epoch_samples: int = option(
        1024, help="CT folders only: training crops per epoch (images: every image once)"
    )
    cache_dir: str | None = option(
        None, help="CT folders only: training cache (default: lunaseg train's)", metavar="DIR"
    )
    device: str = option("auto", help="auto (CUDA when present), cpu or cuda[:N]")
    threads: int = option(0, help="CPU threads for torch (0: torch's default)")
    amp: str = option("auto", help="mixed precision, as lunaseg train's", choices=AMP_MODES)
    channels_last: str = option(
        "auto", help="channels-last memory format, as lunaseg train's", choices=ON_OFF_AUTO
    )
    resume: bool = option(False, help="continue an interrupted comparison in OUT")
    overwrite: bool = option(False, help="start over in an OUT that holds a comparison")

    def __post_init__(self) -> None:
        self.data = str(Path(self.data).expanduser().resolve())
        self.models = tuple(self.models)
        self.losses = tuple(self.losses)
        if len(self.split) != len(SPLIT_PARTS):
            raise ConfigError(
                f"split needs {len(SPLIT_PARTS)} counts ({','.join(SPLIT_PARTS)}); got "
                f"{self.split}."
            )
        self.split = (int(self.split[0]), int(self.split[1]), int(self.split[2]))
        if not self.models or not self.losses:
            raise ConfigError("Name at least one model and one loss to compare.")
        for name in ("epochs", "size", "seeds", "batch_size", "examples", "epoch_samples"):
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
            amp=options.amp,
            channels_last=options.channels_last,
            **overrides,
        )

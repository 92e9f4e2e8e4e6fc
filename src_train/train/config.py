"""TrainConfig: every option of a training run, in one place.

Each field is a ``lunaseg train`` option (the command line is generated from these fields, see
:mod:`src_train.options`), is saved in the run's ``config.json`` and in every checkpoint.
Defaults of other modules' settings (crop sizes, model shape, loss weights) are read from those
modules, so each default is written once; the training recipe's defaults are
:data:`DEMO_RECIPE`, the shipped demo detector's.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

from src_train import DEFAULT_DATA_DIR
from src_train.augment import AUGMENTATIONS, SCANNER_AUGMENTATIONS, AugmentConfig
from src_train.context import DEFAULT_CONTEXT_SLICES
from src_train.datasets import SampleConfig
from src_train.errors import ConfigError
from src_train.losses import LOSSES, WEIGHTED_LOSSES, LossConfig
from src_train.masks import DEFAULT_THRESHOLD_HU, REFERENCE_METHOD, available_methods
from src_train.model import ARCHITECTURES, ModelConfig
from src_train.options import option
from src_train.records.contract import CONTRACT_POLICIES
from src_train.records.threshold import DEFAULT_THRESHOLD
from src_train.train.second_stage import RANKER_CHOICES
from src_train.train.validation import DEFAULT_BEST_MIN_PRECISION

AMP_MODES = ("auto", "bf16", "fp16", "off")
LR_SCHEDULES = ("constant", "cosine")
ON_OFF_AUTO = ("auto", "on", "off")

_Record = TypeVar("_Record", bound="OptionsRecord")


class OptionsRecord:
    """A run's options dataclass as plain JSON and back (``config.json``, checkpoints)."""

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: type[_Record], data: dict[str, Any]) -> _Record:
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`ConfigError`."""
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"Unknown training option(s) {unknown}.")
        return cls(**data)


#: Smallest ``val_stride``: 1 would hold out every series and leave none to train on.
MIN_VAL_STRIDE = 2

#: The recipe the shipped demo detector was trained with (``docs/demo_checkpoint.md``,
#: ``assets/demo_unet.json``): the defaults of ``lunaseg train`` and the Training widget, so a
#: run without flags makes a usable detector. A user changes flags to experiment.
DEMO_RECIPE: dict[str, Any] = {
    "loss": "bce",
    "small_nodule_px": 60.0,
    "negative_fraction": 0.5,
    "edge_fraction": 0.15,
    "detection_threshold": 0.25,
    "lr_schedule": "cosine",
    "ranker": "combined",
    "ranker_series": 0,
    "epochs": 100,
    "val_every": 10,
    "context_mm": 2.0,
}

#: The reference chapter's recipe (the SPEC's): soft Dice + 8 x false-negative Dice, crops
#: around nodules only, a constant rate, masks at 0.5 and no second stage. It marks much of the
#: body (README, "Model, training and the demo checkpoint"); pass these flags to reproduce it.
REFERENCE_RECIPE: dict[str, Any] = {
    "loss": "dice-fn",
    "fn_weight": LossConfig.fn_weight,
    "small_nodule_px": 0.0,
    "negative_fraction": 0.0,
    "edge_fraction": 0.0,
    "detection_threshold": DEFAULT_THRESHOLD,
    "lr_schedule": "constant",
    "ranker": "none",
    "context_mm": 0.0,
}


def recipe_flags(recipe: dict[str, Any]) -> str:
    """A recipe as ``lunaseg train`` flags (``--loss bce --epochs 20 ...``)."""
    return " ".join(
        f"--{name.replace('_', '-')} {value:g}"
        if isinstance(value, float)
        else f"--{name.replace('_', '-')} {value}"
        for name, value in recipe.items()
    )


@dataclass
class TrainConfig(OptionsRecord):
    """Everything a training run needs (see each field's help for its meaning and unit)."""

    # -- data ----------------------------------------------------------------------------------
    data_dir: str = option(DEFAULT_DATA_DIR, help="LUNA16-layout folder", cli=False)
    run_dir: str = option("runs/unet", help="run folder", metavar="DIR")
    cache_dir: str | None = option(
        None, help="cache folder (default: DATA_DIR/cache)", metavar="DIR"
    )
    threshold_hu: float = option(
        DEFAULT_THRESHOLD_HU, help="mask density threshold in HU", metavar="HU"
    )
    mask_method: str = option(
        REFERENCE_METHOD, help="how masks are made from points", choices=available_methods
    )
    crop_size: int = option(SampleConfig.crop_size, help="training crop side, pixels")
    window_size: int = option(
        SampleConfig.window_size, help="window around a nodule the crop is taken from, pixels"
    )
    context_slices: int = option(
        DEFAULT_CONTEXT_SLICES, help="neighbouring slices each side (channels 2N+1)"
    )
    context_mm: float = option(
        DEMO_RECIPE["context_mm"],
        help="context slices every MM millimetres along the slice axis, resampled between "
        "slices, so the model serves any slice thickness; 0: the next slices (voxel offsets)",
        metavar="MM",
    )
    val_stride: int = option(10, help="every N-th series is held out for validation")
    negative_fraction: float = option(
        DEMO_RECIPE["negative_fraction"],
        help="share of training crops not centered on a nodule (body crops, hard negatives)",
    )
    hard_fraction: float = option(
        SampleConfig.hard_fraction,
        help="share of those negatives taken where the model fired without a nodule",
    )
    edge_fraction: float = option(
        DEMO_RECIPE["edge_fraction"],
        help="share of nodule crops shown as if the scan ended beside the nodule",
    )
    off_center_fraction: float = option(
        SampleConfig.off_center_fraction,
        help="share of nodule crops taken on any slice the nodule's mask covers through its "
        "centre, not its centre slice (0: the centre slice only, the SPEC's sampling)",
    )
    slab_fraction: float = option(
        SampleConfig.slab_fraction,
        help="share of crops from scans with slices under 3 mm shown as a thicker "
        "reconstruction (each context sample averaged over a slab drawn between the scan's "
        "slice spacing and 3 mm); needs --context-mm (0: off)",
    )
    # -- schedule ------------------------------------------------------------------------------
    epochs: int = option(DEMO_RECIPE["epochs"], help="last epoch to train")
    epoch_samples: int = option(1024, help="training crops per epoch (all processes together)")
    batch_size: int = option(16, help="training batch size per process")
    detection_threshold: float = option(
        DEMO_RECIPE["detection_threshold"],
        help="probability threshold of validation's masks and candidates and of the second "
        "stage's; stored in the checkpoints as their default for lunaseg infer and the viewer",
    )
    val_batch_size: int | None = option(
        None, help="validation slices per model pass (default: the fastest measured)"
    )
    val_every: int = option(
        DEMO_RECIPE["val_every"], help="validate on epoch 1, every N-th epoch and the last"
    )
    ranker: str = option(
        DEMO_RECIPE["ranker"],
        help="second stage fitted after the last epoch on training series' candidates: "
        "features (size, shape, confidence), classifier (3-D CNN on CT patches), combined",
        choices=RANKER_CHOICES,
    )
    ranker_series: int = option(
        DEMO_RECIPE["ranker_series"], help="training series the second stage learns from (0: all)"
    )
    ranker_points: str | None = option(
        None,
        help="another LUNA16-layout folder: the annotated nodule centres and candidates.csv "
        "points of its series (those not in DATA_DIR) join the second stage's patch "
        "classifier's examples (classifier, combined; no segmenter runs on them, the segmenter "
        "never sees them)",
        metavar="DIR",
    )
    best_min_precision: float = option(
        DEFAULT_BEST_MIN_PRECISION,
        help="an epoch whose voxel precision on the validation series is lower is never 'best'",
    )
    num_workers: int = option(
        2, help="data-loader worker processes (0 = in the main process)", flag="--workers"
    )
    progress_every: int = option(1, help="batch progress every N batches")
    # -- model and optimisation ----------------------------------------------------------------
    model: str = option("unet", help="architecture", choices=ARCHITECTURES)
    depth: int = option(ModelConfig.depth, help="resolution levels of the model")
    filters: int = option(ModelConfig.filters, help="filters at the top level (doubling per level)")
    loss: str = option(
        DEMO_RECIPE["loss"],
        help="dice-fn = soft Dice + FN-WEIGHT x false-negative Dice (the SPEC's)",
        choices=LOSSES,
    )
    fn_weight: float = option(
        LossConfig.fn_weight, help="weight of the false-negative Dice in dice-fn"
    )
    focal_gamma: float = option(LossConfig.focal_gamma, help="focusing exponent of the focal loss")
    focal_alpha: float | None = option(
        LossConfig.focal_alpha,
        help="weight of nodule voxels in the focal loss (1 - it for the rest); none by default",
    )
    small_nodule_px: float = option(
        DEMO_RECIPE["small_nodule_px"],
        help="bce/focal: nodule voxels of a crop with fewer than N of them weigh N / count, so "
        "small nodules count as much as one of N voxels (0 = off; the Dice losses have no "
        "voxel weights: they ignore the default and refuse another value)",
    )
    lr: float = option(1e-3, help="Adam learning rate")
    lr_schedule: str = option(
        DEMO_RECIPE["lr_schedule"],
        help="constant, or cosine: the rate falls from --lr to 0 along a half cosine over the "
        "epochs (set at each epoch's start)",
        choices=LR_SCHEDULES,
    )
    augment: str = option(
        ",".join(AUGMENTATIONS),
        help=f"comma list of {','.join(AUGMENTATIONS)}; 'all' or 'none'; scanner robustness "
        f"(CT, off unless named): {','.join(SCANNER_AUGMENTATIONS)}",
        metavar="LIST",
    )
    scanner_fraction: float = option(
        AugmentConfig.scanner_fraction,
        help="share of training crops the scanner augmentations (intensity, kernel, "
        "resolution) touch; the others keep their scan's own look (1: every crop)",
    )
    seed: int = option(0, help="random seed")
    # -- device --------------------------------------------------------------------------------
    device: str = option("auto", help="auto (CUDA when present), cpu or cuda[:N]")
    threads: int = option(
        1,
        help="CPU threads for torch (0 = torch's default, one per core; 1 measured faster with "
        "the data-loader workers beside it on a busy CPU: benchmarks/train_threads.py)",
    )
    amp: str = option(
        "auto",
        help="mixed precision (auto: bf16/fp16 on GPUs; bf16 on CPUs with native bf16 and AMX)",
        choices=AMP_MODES,
    )
    channels_last: str = option(
        "auto",
        help="channels_last memory format (auto: on GPUs, and on CPUs with bf16)",
        choices=ON_OFF_AUTO,
    )
    # -- run folder ----------------------------------------------------------------------------
    resume: bool = option(False, help="continue from RUN_DIR/checkpoint_latest.pt")
    contract: str = option(
        "check",
        help="on --resume: check = refuse any change of split, data or data options; stored = "
        "continue with the run's stored ones; current = adopt today's (older runs without one)",
        choices=CONTRACT_POLICIES,
    )
    overwrite: bool = option(False, help="start over in a run folder that holds a run")
    tensorboard: bool = option(True, help="do not write TensorBoard logs", flag="--no-tensorboard")
    tb_images: int = option(4, help="validation slices drawn to TensorBoard per validation")

    def __post_init__(self) -> None:
        positive = (
            "epochs",
            "epoch_samples",
            "batch_size",
            "val_batch_size",
            "val_every",
            "progress_every",
            "crop_size",
            "window_size",
        )
        for name in positive:
            if getattr(self, name) is not None and int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be at least 1; got {getattr(self, name)}.")
        if min(self.num_workers, self.context_slices, self.tb_images, self.threads, self.seed) < 0:
            raise ConfigError(
                "num_workers, context_slices, tb_images, threads and seed must not be negative."
            )
        if not 0.0 < self.detection_threshold < 1.0:
            raise ConfigError(
                f"detection_threshold must lie in (0, 1); got {self.detection_threshold}."
            )
        if not (math.isfinite(self.context_mm) and self.context_mm >= 0.0):
            raise ConfigError(
                f"context_mm must be a distance in mm (0: the next slices); got {self.context_mm}."
            )
        if self.val_stride < MIN_VAL_STRIDE:
            raise ConfigError(
                f"val_stride must be at least {MIN_VAL_STRIDE} (every n-th series validates, the "
                f"others train); got {self.val_stride}."
            )
        if self.amp not in AMP_MODES:
            raise ConfigError(f"amp must be one of {', '.join(AMP_MODES)}; got {self.amp!r}.")
        if self.channels_last not in ON_OFF_AUTO:
            raise ConfigError(
                f"channels_last must be one of {', '.join(ON_OFF_AUTO)}; "
                f"got {self.channels_last!r}."
            )
        if self.resume and self.overwrite:
            raise ConfigError(
                "resume (continue the run) and overwrite (start it over) contradict each other; "
                "choose one."
            )
        if not 0.0 <= self.best_min_precision <= 1.0:
            raise ConfigError(
                f"best_min_precision must lie in [0, 1]; got {self.best_min_precision}."
            )
        if self.ranker not in RANKER_CHOICES:
            raise ConfigError(
                f"ranker must be one of {', '.join(RANKER_CHOICES)}; got {self.ranker!r}."
            )
        if self.ranker_series < 0:
            raise ConfigError(f"ranker_series must not be negative; got {self.ranker_series}.")
        if self.ranker_points is not None and self.ranker not in ("classifier", "combined"):
            raise ConfigError(
                f"ranker_points feeds the second stage's patch classifier; --ranker {self.ranker} "
                "has none. Use --ranker classifier or combined, or drop --ranker-points."
            )
        if self.contract not in CONTRACT_POLICIES:
            raise ConfigError(
                f"contract must be one of {', '.join(CONTRACT_POLICIES)}; got {self.contract!r}."
            )
        if self.lr_schedule not in LR_SCHEDULES:
            raise ConfigError(
                f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}; got {self.lr_schedule!r}."
            )
        if self.lr <= 0:
            raise ConfigError(f"The learning rate must be positive; got {self.lr}.")
        # Validate the parts other modules own now, not after the cache is built.
        self.model_config()
        self.loss_config()
        self.augment_config()
        self.sample_config()

    def lr_at(self, epoch: int) -> float:
        """The learning rate of ``epoch`` (1-based) under :attr:`lr_schedule`."""
        if self.lr_schedule == "constant":
            return self.lr
        return 0.5 * self.lr * (1.0 + math.cos(math.pi * (epoch - 1) / self.epochs))

    @property
    def context_spacing_mm(self) -> float | None:
        """:attr:`context_mm` as the model and the crops take it (None: the next slices)."""
        return self.context_mm or None

    def model_config(self) -> ModelConfig:
        """The model these options describe."""
        return ModelConfig(
            arch=self.model,
            in_channels=2 * self.context_slices + 1,
            depth=self.depth,
            filters=self.filters,
            context_mm=self.context_spacing_mm,
        )

    def loss_config(self) -> LossConfig:
        """The loss these options describe. The default ``small_nodule_px`` is the demo
        recipe's weight for BCE: a loss without voxel weights drops it (any other value still
        reaches :class:`LossConfig`, which refuses it for such a loss)."""
        unweighted = self.loss not in WEIGHTED_LOSSES
        default = self.small_nodule_px == DEMO_RECIPE["small_nodule_px"]
        return LossConfig(
            name=self.loss,
            fn_weight=self.fn_weight,
            focal_gamma=self.focal_gamma,
            focal_alpha=self.focal_alpha,
            small_nodule_px=0.0 if unweighted and default else self.small_nodule_px,
        )

    def augment_config(self) -> AugmentConfig:
        """The augmentation these options describe."""
        return AugmentConfig.from_names(self.augment, scanner_fraction=self.scanner_fraction)

    def sample_config(self) -> SampleConfig:
        """Crop shapes."""
        return SampleConfig(
            self.crop_size,
            self.window_size,
            self.context_slices,
            self.negative_fraction,
            self.hard_fraction,
            self.edge_fraction,
            self.context_spacing_mm,
            self.off_center_fraction,
            self.slab_fraction,
        )
